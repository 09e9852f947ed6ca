"""A user's own model (source = "python": a callable in a file beside the profile), profiles
that extend another, and --model: every technique of a tiny grid runs on a small CNN defined
here, with no edit under mnv2core/; its failures are one line naming the fix."""
import dataclasses
import subprocess
import sys
import textwrap

import pytest
import torch
from test_case_layer import DEPLOYMENTS
from test_case_layer import TINY as CASE_LAYER_TINY
from test_plugin import REPO

from mnv2core.errors import ConfigError, WeightsUnavailableError
from mnv2core.grid import build_grid
from mnv2core.models import build_model
from mnv2core.profiles import add_model, load_profile, model_spec
from mnv2core.study import Settings, Study
from mnv2core.techniques import catalogue
from mnv2core.weights import WeightsSource, load_pretrained_state

NET = textwrap.dedent("""
    from torch import nn


    class Net(nn.Module):
        def __init__(self, num_classes, width=8):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                          nn.MaxPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
                                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(2 * width, num_classes)

        def forward(self, x):
            return self.fc(self.features(x))


    def not_a_network(num_classes):
        return "a string"


    def grey_net(num_classes):
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
""")
MINE = """
[models.mine]
source = "python"
arch = "nets/net.py:Net"
kwargs = { width = 6 }
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
"""


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A profile folder holding the case layer's tiny profile with only the user's model, and its net.py."""
    root = tmp_path_factory.mktemp("own")
    (root / "nets").mkdir()
    (root / "nets" / "net.py").write_text(NET)
    text = (CASE_LAYER_TINY.replace("[models.mobilenet_v2]\nweights = \"none\"\n[models.resnet50]\nweights = \"none\"\n",
                                    MINE)
            .replace("[datasets.tiny]\n", "[datasets.tiny]\nmodels = [\"mine\"]\n"))
    (root / "tiny.toml").write_text(text)
    return root


def test_a_python_model_runs_every_technique_of_the_grid(own):
    profile = load_profile(str(own / "tiny.toml"), catalogue())
    study = Study(profile, Settings(cache_dir=own / "cache", results_dir=own / "results"))
    cases = build_grid(profile, catalogue())
    assert {c.model for c in cases} == {"mine"}
    assert {c.technique for c in cases} >= {"partial_ft", "full_ft", "full_ft_prune", "full_ft_structured",
                                           "full_ft_lottery", "full_ft_svd", *(f"full_ft_{d}" for d in DEPLOYMENTS)}
    for case in cases:
        record = study.run_case(case)
        study.check(case, record)
        if "accuracy" in record["metrics"]:
            assert 0 <= record["metrics"]["accuracy"] <= 1, case.id
    network = record["provenance"]["network"]
    assert network["source"] == "python" and network["arch"] == f"{own / 'nets' / 'net.py'}:Net"
    assert network["kwargs"] == {"width": 6} and network["mean"] == [0.5, 0.5, 0.5] and len(network["code"]) == 16


def test_editing_the_models_file_changes_every_key_built_from_it(own, tmp_path):
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "net.py").write_text(NET)
    (tmp_path / "tiny.toml").write_text((own / "tiny.toml").read_text())
    settings = Settings(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results")
    before = Study(load_profile(str(tmp_path / "tiny.toml"), catalogue()), settings)
    key = before.artifact_key("tiny", "full_ft", "mine")
    assert Study(load_profile(str(tmp_path / "tiny.toml"), catalogue()), settings).artifact_key(
        "tiny", "full_ft", "mine") == key
    (tmp_path / "nets" / "net.py").write_text(NET.replace("nn.ReLU(),\n", "nn.ReLU6(),\n", 1))
    after = Study(load_profile(str(tmp_path / "tiny.toml"), catalogue()), settings)
    assert after.artifact_key("tiny", "full_ft", "mine") != key


@pytest.mark.parametrize("arch, message", [
    ("{own}/nets/missing.py:Net", r"nets/missing.py does not exist \(a path in a profile is relative to the profile's"),
    ("{own}/nets/net.py:Nett", r"has no callable 'Nett'; it defines \['Net', 'grey_net', 'not_a_network'\]"),
    ("{own}/nets/net.py", r"must be 'package.module:callable' or 'path/to/file.py:callable'"),
    ("no_such_package.nets:Net", r"module 'no_such_package.nets' cannot be imported"),
])
def test_a_model_that_cannot_be_found_is_one_line(own, tmp_path, arch, message):
    (tmp_path / "p.toml").write_text((own / "tiny.toml").read_text().replace("nets/net.py:Net", arch.format(own=own)))
    with pytest.raises(ConfigError, match=message) as error:
        load_profile(str(tmp_path / "p.toml"), catalogue())
    assert "\n" not in str(error.value) and "models.mine" in str(error.value)


def test_a_callable_that_returns_no_module_is_one_line_when_the_profile_loads(own):
    with pytest.raises(ConfigError, match=r"returned a str, not an nn.Module"):
        model_spec("bad", {"source": "python", "arch": f"{own}/nets/net.py:not_a_network"})


def test_a_network_that_takes_other_than_the_images_channels_is_one_line_and_draws_no_random_number(own):
    state = torch.random.get_rng_state()
    model_spec("mine", {"source": "python", "arch": f"{own}/nets/net.py:Net"})  # built once to be checked
    assert torch.equal(torch.random.get_rng_state(), state)  # the runs' random init is not shifted by it
    with pytest.raises(ConfigError) as error:
        model_spec("grey", {"source": "python", "arch": f"{own}/nets/net.py:grey_net"})
    assert str(error.value) == ("model grey: its first convolution (0) takes 1 input channel(s), its images have 3 "
                                "(RGB; grey datasets repeat the grey level): build it with 3 input channels")


def test_checkpoints_are_unwrapped_only_as_the_table_says(own, tmp_path):
    spec = model_spec("mine", {"source": "python", "arch": f"{own}/nets/net.py:Net"})
    state = build_model(spec, 10).net.state_dict()
    wrapped, prefixed = tmp_path / "wrapped.pth", tmp_path / "prefixed.pth"
    torch.save({"epoch": 3, "state_dict": state}, wrapped)
    torch.save({f"module.{k}": v for k, v in state.items()}, prefixed)
    with pytest.raises(WeightsUnavailableError, match=r"wraps its state dict under 'state_dict': add checkpoint_key"):
        load_pretrained_state(spec, WeightsSource("file", wrapped))
    with pytest.raises(WeightsUnavailableError, match=r"starts with 'module.' .*add strip_prefix = \"module.\""):
        load_pretrained_state(spec, WeightsSource("file", prefixed))
    for path, option in ((wrapped, {"checkpoint_key": "state_dict"}), (prefixed, {"strip_prefix": "module."})):
        loaded, _ = load_pretrained_state(dataclasses.replace(spec, **option), WeightsSource("file", path))
        assert loaded.keys() == state.keys()


def test_weights_of_another_architecture_name_the_first_difference(own, tmp_path):
    from mnv2core.models import from_pretrained
    spec = model_spec("mine", {"source": "python", "arch": f"{own}/nets/net.py:Net"})
    other = model_spec("wide", {"source": "python", "arch": f"{own}/nets/net.py:Net", "kwargs": {"width": 4}})
    with pytest.raises(ConfigError, match=r"features.0.weight is \(4, 3, 3, 3\) in the file, \(8, 3, 3, 3\) in the "
                                          r"network"):
        from_pretrained(spec, build_model(other, 10).net.state_dict(), 10)


def test_a_profile_extends_another_and_holds_only_what_changes(own, tmp_path):
    (tmp_path / "child.toml").write_text(f'extends = "{own}/tiny.toml"\nseed = 7\n[techniques.full_ft]\nepochs = 2\n')
    parent, child = (load_profile(str(p), catalogue()) for p in (own / "tiny.toml", tmp_path / "child.toml"))
    assert child.seed == 7 and parent.seed == 3
    assert child.techniques["full_ft"].epochs == 2 and child.techniques["full_ft"].lr == parent.techniques["full_ft"].lr
    assert child.models["mine"] == parent.models["mine"]  # its file, relative to the parent profile
    builtin = tmp_path / "smoke_plus.toml"
    builtin.write_text('extends = "smoke"\n[models.lite]\nsource = "timm"\narch = "efficientnet_lite0"\n')
    assert load_profile(str(builtin), catalogue()).models["lite"].source == "timm"
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ConfigError, match=r"extends makes a cycle \(a.toml -> b.toml -> a.toml\)"):
        load_profile(str(tmp_path / "a.toml"), catalogue())


def test_model_option_adds_a_model_to_the_fine_tuning_study_with_floors_reported(own):
    profile = load_profile(str(own / "tiny.toml"), catalogue())
    grown = add_model(profile, f"other=python:{own}/nets/net.py:Net", catalogue())
    cases = {c.id for c in build_grid(grown, catalogue())}
    assert {"tiny-other-partial_ft", "tiny-other-full_ft", "tiny-other-full_ft_int8"} <= cases
    assert grown.floor("tiny", "full_ft", "other") is None and grown.floor("tiny", "full_ft", "mine") == 0.0
    for text, message in (("other", "give NAME=SOURCE:SPEC"), ("x=keras:m.h5", "source 'keras'; choose one of"),
                          ("mine=timm:resnet18", "declares a model 'mine' already")):
        with pytest.raises(ConfigError, match=message):
            add_model(profile, text, catalogue())


def test_model_option_on_the_command_line_plans_the_users_model(own, tmp_path):
    command = [sys.executable, "-m", "pytest", str(REPO / "benchmarks"), "--profile", str(own / "tiny.toml"),
               "--model", "extra=python:nets/net.py:Net", "--cache-dir", str(tmp_path / "cache"),
               "--results-dir", str(tmp_path / "results"), "-p", "no:cacheprovider", "--plan", "-k", "extra"]
    result = subprocess.run(command, cwd=own, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert " build  tiny-extra-partial_ft" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
