"""Which math kernels a run pins, read from its profile before torch is imported."""
from mnv2core import kernels


def test_the_profile_on_the_command_line_or_in_the_environment_chooses(tmp_path):
    assert kernels.requested(["benchmarks", "-n", "2"], {}) == "portable"  # smoke, the default
    assert kernels.requested(["benchmarks", "--profile", "cpu"], {}) == "native"
    assert kernels.requested(["benchmarks"], {"MNV2BENCH_PROFILE": "cpu"}) == "native"
    child = tmp_path / "mine.toml"
    child.write_text('extends = "smoke"\nseed = 4\n')
    assert kernels.requested([f"--profile={child}"], {}) == "portable"  # through extends
    child.write_text('extends = "smoke"\nkernels = "native"\n')
    assert kernels.requested(["--profile", str(child)], {}) == "native"
    assert kernels.requested(["--profile", str(tmp_path / "missing.toml")], {}) == "native"  # the plugin says why


def test_pins_are_environment_variables_and_a_process_that_loaded_torch_first_is_told():
    environ = {}
    assert kernels.pin("portable", environ) == kernels.PORTABLE and environ == kernels.PORTABLE
    assert kernels.pin("native", {}) == {}
    import torch
    if torch.backends.cpu.get_cpu_capability() != "AVX2":  # this test process runs native kernels
        assert "torch was imported before the pins were set" in kernels.problem("portable")
    assert kernels.problem("native") is None
