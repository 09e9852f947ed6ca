"""The case layer outside the grid: a Study on a tiny profile builds, measures and checks
cases in-process; measurements leave cached models untouched; the checks that guard the
compression techniques fail on metrics that break them."""
import copy
import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from mnv2core.errors import WeightsUnavailableError
from mnv2core.models import ModelSpec
from mnv2core.profiles import load_profile
from mnv2core.registry import CheckFailed
from mnv2core.study import Settings, Study
from mnv2core.techniques import catalogue

TINY = """
description = "tiny case layer"
device = "cpu"
seed = 3
eval_batch_size = 64
threads = 1

[datasets.tiny]
source = "synthetic"
native_size = 32
input_size = 32
train_size = 64
test_size = 32

[models.mobilenet_v2]
weights = "none"
[models.resnet50]
weights = "none"

[techniques.partial_ft]
epochs = 1
batch_size = 32
augment = false
[techniques.full_ft]
epochs = 1
batch_size = 32
lr = 1e-4

[compression]
bases = ["full_ft"]
[compression.prune]
rounds = 2
amount = 0.3
epochs = 1
[compression.structured]
ratio = 0.5
epochs = 1
[compression.lottery]
epochs = 1
[compression.svd]
energy = 0.9
keep_ratios = [0.5]
epochs = 1

[deployment]
bases = ["full_ft"]
[deployment.int8]
calibration_batches = 1
max_drop = 1.0
[deployment.onnx]
[deployment.latency]
batch_sizes = [1]
warmup = 1
rounds = 2
[deployment.fgsm]
images = 16
[deployment.pgd]
steps = 3
images = 16
[deployment.robustness]
blur_sigmas = [1.0]
noise_sigmas = [0.1]
images = 16
[deployment.gradcam]
images = 8
overlays = 2
steps = 3
[deployment.deconvnet]
images = 8
count = 2

[floors.tiny]
partial_ft = 0.0
full_ft = 0.0
full_ft_prune = 0.0
full_ft_structured = 0.0
full_ft_lottery = 0.0
full_ft_svd = 0.0
"""
DEPLOYMENTS = ("int8", "onnx", "latency", "fgsm", "pgd", "robustness", "gradcam", "deconvnet")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("case_layer")
    path = root / "tiny.toml"
    path.write_text(TINY)
    profile = load_profile(str(path), catalogue())
    return Study(profile, Settings(cache_dir=root / "cache", results_dir=root / "results"))


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    """The tiny profile on the two-conv network of examples/net.py: for the runtimes that
    compile the whole network (Inductor, PT2E, OpenVINO), whose cost grows with its depth."""
    root = tmp_path_factory.mktemp("small_case_layer")
    path = root / "small.toml"
    net = Path(__file__).resolve().parents[1] / "examples" / "net.py"
    path.write_text(TINY.replace("test_size = 32\n", 'test_size = 32\nmodels = ["net"]\n', 1)
                    + f'\n[models.net]\nsource = "python"\narch = "{net}:Net"\n')
    profile = load_profile(str(path), catalogue())
    return Study(profile, Settings(cache_dir=root / "cache", results_dir=root / "results"))


def run(study, technique):
    case = study.case("tiny", technique)
    record = study.run_case(case)
    study.check(case, record)
    return record["metrics"]


def snapshot(model):
    return {"state": copy.deepcopy(model.state_dict()),
            "modes": [m.training for m in model.modules()],
            "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                         for m in model.modules()),
            "grads": [p.grad for p in model.parameters()],
            "requires_grad": [p.requires_grad for p in model.parameters()]}


@pytest.mark.parametrize("method", DEPLOYMENTS)
def test_a_measurement_leaves_the_cached_model_as_it_was(study, method):
    base = study.artifact("tiny", "full_ft").model
    before = snapshot(base)
    metrics = run(study, f"full_ft_{method}")
    after = snapshot(base)
    assert metrics  # it measured something
    assert after["modes"] == before["modes"] and after["hooks"] == before["hooks"] == 0
    assert all(g is None for g in after["grads"]) and after["requires_grad"] == before["requires_grad"]
    assert all(torch.equal(before["state"][k], v) for k, v in after["state"].items())


def test_a_rerun_reuses_measured_metrics_and_plots_but_times_latency_again(study, tmp_path):
    def measured(in_study):
        records = {method: in_study.run_case(in_study.case("tiny", f"full_ft_{method}"))
                   for method in ("robustness", "int8", "latency")}
        statuses.append({method: record["cache"]["status"] for method, record in records.items()})
        return {method: {k: v for k, v in record["metrics"].items() if k not in ("build_seconds", "measure_seconds")}
                for method, record in records.items()}

    statuses = []
    first = measured(study)
    rerun = Study(study.profile, dataclasses.replace(study.settings, results_dir=tmp_path / "elsewhere"))
    events = len(rerun.cache.events)
    again = measured(rerun)
    assert again["robustness"] == {**first["robustness"], "plot": again["robustness"]["plot"]}
    assert again["int8"] == first["int8"]
    # the plot is written again where this run keeps its plots, byte for byte
    assert Path(again["robustness"]["plot"]).parent == tmp_path / "elsewhere" / "plots"
    assert Path(again["robustness"]["plot"]).read_bytes() == Path(first["robustness"]["plot"]).read_bytes()
    loaded = {name for name, status in rerun.cache.events[events:] if status == "loaded"}
    assert {"tiny-mobilenet_v2-full_ft_robustness-robustness", "tiny-mobilenet_v2-full_ft_int8-int8"} <= loaded
    assert not any(status == "built" for _, status in rerun.cache.events[events:])
    assert again["latency"]["latency"] != first["latency"]["latency"]  # timed again (floats never repeat)
    assert statuses[1] == {"robustness": "reused", "int8": "reused", "latency": "measured"}
    # a check's threshold is read from the profile as it is now, not from the cached metrics
    stricter = dataclasses.replace(study.profile, deployments={**study.profile.deployments,
                                                               "int8": {**study.profile.deployments["int8"], "max_drop": 0.5}})
    assert Study(stricter, study.settings).run_case(study.case("tiny", "full_ft_int8"))["metrics"]["max_drop"] == 0.5


def test_ort_int8_accuracy_is_reused_only_on_a_cpu_with_the_same_int8_kernels(study, monkeypatch):
    """The cached ONNX measurement is keyed by ORT int8's kernel choice: a CPU without an int8
    dot product (exact kernels) measures again, and says which kernels ran."""
    from mnv2core import execution
    from mnv2core.deploy import onnx_runtime
    first = study.run_case(study.case("tiny", "full_ft_onnx"))
    assert first["metrics"]["ort_int8"]["session_options"] == onnx_runtime.int8_kernels().session_options
    assert study.run_case(study.case("tiny", "full_ft_onnx"))["cache"]["status"] == "reused"
    fast_here = bool(onnx_runtime.int8_kernels().flags)
    other = {"avx2"} if fast_here else {"avx2", "avx512_vnni"}  # a CPU with the other kernels
    monkeypatch.setattr(execution, "cpu_flags", lambda: frozenset(other))
    elsewhere = study.run_case(study.case("tiny", "full_ft_onnx"))
    assert elsewhere["cache"]["status"] == "measured"
    assert elsewhere["metrics"]["ort_int8"]["kernels"].startswith("exact" if fast_here else "fast")
    assert elsewhere["metrics"]["ort_int8"]["session_options"] == ({onnx_runtime.EXACT_INT8: "1"} if fast_here else {})


def test_compiled_runtimes_are_measured_and_timed_beside_the_others_and_one_that_fails_is_skipped(small_study,
                                                                                                  monkeypatch):
    from mnv2core.deploy import twins
    from mnv2core.deploy.compiled import CompileError
    compiled = {**catalogue().get("compiled").params.defaults(), "max_drop": 1.0}
    deployments = {**small_study.profile.deployments, "compiled": compiled}
    profile = dataclasses.replace(small_study.profile, deployments=deployments)
    with_compiled = Study(profile, small_study.settings)
    case = with_compiled.case("tiny", "full_ft_compiled")
    record = with_compiled.run_case(case)
    with_compiled.check(case, record)
    m = record["metrics"]
    assert {"compiled_fp32", "pt2e_int8"} <= set(m["compile_seconds"])
    native_bf16 = twins.cpu_has_native_bf16()  # bf16 runs only there, and never fp32 under its name
    assert set(m["skipped"]) == (set() if native_bf16 else {"eager_bf16", "compiled_bf16"})
    assert all(reason == twins.NO_BF16 for reason in m["skipped"].values())
    assert ("eager_bf16_accuracy" in m) == ("compiled_bf16_accuracy" in m) == native_bf16
    assert m["top1_agreement"] >= 0.99 and 0 <= m["pt2e_int8_accuracy"] <= 1
    assert m["versions"]["torchao"].startswith("0.18")
    latency = with_compiled.run_case(with_compiled.case("tiny", "full_ft_latency"))["metrics"]
    assert {"compiled_fp32", "pt2e_int8"} <= set(latency["runtimes"])
    assert latency["latency"]["pt2e_int8_b1_ms"] > 0 and "pt2e_int8_b1_speedup" in latency["speedup"]

    def failing(*args):
        raise CompileError("PT2E int8 failed: Unsupported: data-dependent control flow")
    monkeypatch.setattr(twins, "compile_pt2e_int8", failing)
    monkeypatch.setattr(twins, "compile_fp32", lambda model, example: (model, 0.0))  # compiled above already
    fresh = Study(profile, small_study.settings)  # twins are made once per process and study
    assert fresh.run_case(case)["cache"]["status"] == "reused"  # the cached entry loads (weights-only)
    latency = fresh.run_case(fresh.case("tiny", "full_ft_latency"))["metrics"]
    assert "pt2e_int8" not in latency["runtimes"] and "compiled_fp32" in latency["runtimes"]
    assert latency["runtimes_skipped"]["pt2e_int8"] == "PT2E int8 failed: Unsupported: data-dependent control flow"


def test_openvino_is_measured_and_timed_beside_the_others_and_skipped_without_its_extra(small_study, monkeypatch):
    from mnv2core.errors import NotApplicable
    openvino = {**catalogue().get("openvino").params.defaults(), "max_drop": 1.0}
    deployments = {**small_study.profile.deployments, "openvino": openvino}
    profile = dataclasses.replace(small_study.profile, deployments=deployments)
    with_openvino = Study(profile, small_study.settings)
    case = with_openvino.case("tiny", "full_ft_openvino")
    record = with_openvino.run_case(case)
    with_openvino.check(case, record)
    m = record["metrics"]
    assert set(m["prepare_seconds"]) == {"openvino_fp32", "openvino_int8"} and not m["skipped"]
    assert m["configuration"]["openvino_fp32"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert m["top1_agreement"] >= 0.99 and 0 <= m["openvino_int8_accuracy"] <= 1
    assert m["versions"]["openvino"].startswith("2026.4") and m["versions"]["nncf"].startswith("3.4")
    latency = with_openvino.run_case(with_openvino.case("tiny", "full_ft_latency"))["metrics"]
    assert {"openvino_fp32", "openvino_int8"} <= set(latency["runtimes"])
    assert latency["latency"]["openvino_int8_b1_ms"] > 0 and "openvino_int8_b1_speedup" in latency["speedup"]

    monkeypatch.setitem(sys.modules, "openvino", None)  # the extra not installed
    bare = Study(profile, small_study.settings)
    with pytest.raises(NotApplicable, match=r"OpenVINO runtime not installed \(the optional extra: pip install"):
        bare.run_case(case)
    latency = bare.run_case(bare.case("tiny", "full_ft_latency"))["metrics"]
    assert "openvino_int8" not in latency["runtimes"] and "ort_int8" in latency["runtimes"]
    assert latency["runtimes_skipped"]["openvino_fp32"].startswith("OpenVINO runtime not installed")


def test_pgd_is_at_least_as_strong_as_fgsm_at_the_same_epsilon(study):
    fgsm, pgd = run(study, "full_ft_fgsm"), run(study, "full_ft_pgd")
    assert fgsm["clean_accuracy"] == pgd["clean_accuracy"]
    assert pgd["steps"] == 3 and pgd["epsilon"] == fgsm["epsilon"] == 0.05
    assert pgd["images"] == fgsm["images"] == 16  # the same sample of the 32 test images
    robustness = run(study, "full_ft_robustness")
    assert robustness["images"] == 16 and robustness["accuracy"] == fgsm["clean_accuracy"]  # that sample too
    assert Path(robustness["plot"]).name == "tiny-mobilenet_v2-full_ft-robustness.png"  # one per model of a base
    assert pgd["accuracy"] <= pgd["clean_accuracy"]
    assert "int8_fgsm_accuracy" in pgd  # the int8 twin is attacked too


def test_structured_pruning_check_holds_and_catches_a_wrong_count(study):
    metrics = run(study, "full_ft_structured")
    assert metrics["channels_after"] == 640
    broken = {**metrics, "params_after": metrics["params_after"] + 1}
    with pytest.raises(CheckFailed, match="parameters"):
        catalogue().get("structured").check(broken, study.case("tiny", "full_ft_structured"))


def test_svd_check_holds_and_catches_a_rank_that_drops_too_much_energy(study):
    metrics = run(study, "full_ft_svd")
    by_energy = metrics["variants"][0]
    assert by_energy["residual_energy"] <= 0.1 + 1e-6
    broken = copy.deepcopy(metrics)
    broken["variants"][0]["residual_energy"] = 0.2
    with pytest.raises(CheckFailed, match="energy"):
        catalogue().get("svd").check(broken, study.case("tiny", "full_ft_svd"))


def test_lottery_ticket_and_control_share_the_pruned_mask(study):
    metrics = run(study, "full_ft_lottery")
    pruned = run(study, "full_ft_prune")
    assert metrics["sparsity"] == pytest.approx(pruned["sparsity"], abs=1e-6)
    assert metrics["mask_kept"] == {"ticket": 1.0, "control": 1.0}
    broken = {**metrics, "mask_kept": {"ticket": 0.9, "control": 1.0}}
    with pytest.raises(CheckFailed, match="mask"):
        catalogue().get("lottery").check(broken, study.case("tiny", "full_ft_lottery"))


def test_a_compressed_model_rebuilt_in_a_fresh_study_is_bit_identical(study, tmp_path):
    """Seeded builds: the same case built in another process state (fresh study, empty cache,
    other artifacts built in another order) gives the same weights."""
    first = study.artifact("tiny", "full_ft_prune").model.state_dict()
    torch.manual_seed(12345)  # whatever ran before must not matter
    other = Study(study.profile, Settings(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results"))
    rebuilt = other.artifact("tiny", "full_ft_prune").model.state_dict()
    assert all(torch.equal(first[k], rebuilt[k]) for k in first)


def test_a_measurement_has_no_model_of_its_own(study):
    with pytest.raises(Exception, match="measures a model"):
        study.artifact("tiny", "full_ft_int8")


def test_a_measurement_record_claims_no_training_or_cache_status_of_its_own(study):
    record = study.run_case(study.case("tiny", "full_ft_int8"))
    assert record["cache"]["status"] in ("measured", "reused") and record["cache"]["key"] is None
    assert record["cache"]["measured_key"] == study.artifact("tiny", "full_ft").key.digest
    assert record["metrics"]["train_seconds"] is None and record["metrics"]["epochs"] == []


def test_a_metric_its_technique_does_not_declare_fails_the_case(study):
    case = study.case("tiny", "full_ft_int8")
    record = study.run_case(case)
    study.check(case, record)  # every metric as declared
    record["metrics"]["int8_acc"] = 0.5  # e.g. a key renamed in the technique but not in its declarations
    with pytest.raises(CheckFailed, match=r"\['int8_acc'\] are not declared by technique 'int8'"):
        study.check(case, record)


def test_a_record_times_getting_its_model_apart_from_measuring_it(study):
    trained = study.run_case(study.case("tiny", "full_ft"))["metrics"]  # built before: loaded from memory
    assert trained["build_seconds"] < trained["train_seconds"]  # the build ran once, earlier
    assert trained["measure_seconds"] > 0  # the test accuracy was evaluated (or reused) now
    latency = study.run_case(study.case("tiny", "full_ft_latency"))["metrics"]
    assert latency["measure_seconds"] > sum(latency["latency"].values()) / 1000  # the timed rounds, at least


def test_a_model_marked_trained_without_weights_fails_in_one_line_naming_the_option(study):
    spec = ModelSpec("resnet20", "builtin", "cifar_resnet20", weights="none", trained=True)
    trained = Study(dataclasses.replace(study.profile, models={**study.profile.models, "resnet20": spec}),
                    study.settings)
    with pytest.raises(WeightsUnavailableError, match="resnet20 is marked trained .* --weights resnet20=PATH or "
                                                      "MNV2BENCH_WEIGHTS_RESNET20=PATH"):
        trained.start_model("resnet20", 10, 32, pretrained=True)


def test_a_cached_accuracy_edited_with_its_digest_recomputed_contradicts_its_history(study, tmp_path):
    """The digests catch corruption, not tampering: a record whose test accuracy its own
    training history contradicts is refused in one line naming the fix."""
    import shutil

    from mnv2core.cache import payload_digest
    from mnv2core.errors import InconsistentEntry
    honest = run(study, "partial_ft")
    forged_cache = tmp_path / "cache"
    shutil.copytree(study.settings.cache_dir, forged_cache)
    (entry,) = forged_cache.glob("tiny-mobilenet_v2-partial_ft-accuracy-*.pt")
    content = torch.load(entry, weights_only=True)
    content["payload"]["metrics"]["accuracy"] = min(1.0, honest["accuracy"] + 0.25)
    content["digest"] = payload_digest(content["payload"])
    torch.save(content, entry)
    forged = Study(study.profile, dataclasses.replace(study.settings, cache_dir=forged_cache))
    with pytest.raises(InconsistentEntry, match=r"tiny-mobilenet_v2-partial_ft: its test accuracy is .* but its own "
                                                r"training history ended at .*--refresh"):
        forged.run_case(forged.case("tiny", "partial_ft"))


def test_scoped_memo_entries_are_forgotten_once_their_scope_is_no_longer_among_the_last_used(study):
    """A worker measures many bases: it keeps the runtime twins of the last few only, and makes
    a forgotten one again when asked (the memory of the others goes back to the allocator)."""
    from mnv2core.study import SCOPES_KEPT
    fresh = Study(study.profile, study.settings)
    made = []

    def twin(scope: str, kind: str) -> object:
        return fresh.memo((kind, scope), lambda: made.append((kind, scope)) or object(), scope=scope)

    shared = fresh.memo(("calibration",), object)  # unscoped: kept for the process's life
    first = twin("base0", "compiled")
    assert twin("base0", "compiled") is first and twin("base0", "openvino") is not first
    for other in range(1, SCOPES_KEPT + 1):
        twin(f"base{other}", "compiled")
    assert twin(f"base{SCOPES_KEPT}", "compiled") is fresh.memo(("compiled", f"base{SCOPES_KEPT}"), object)
    assert made.count(("compiled", "base0")) == 1
    assert twin("base0", "compiled") is not first and made.count(("compiled", "base0")) == 2  # made again
    assert fresh.memo(("calibration",), object) is shared
