"""A user's ONNX classifier (source = "onnx"): a file the test exports itself is deployed as it
is, on ONNX Runtime and OpenVINO, never trained; what needs the PyTorch network is skipped with
its reason; a fixed batch axis is run in chunks and timed at its own batch only; a file that is
not an image classifier is one line naming the fix."""
import dataclasses
import warnings

import onnx
import pytest
import torch
from test_case_layer import TINY
from test_own_model import NET

from mnv2core.errors import ConfigError, NotApplicable
from mnv2core.grid import build_grid
from mnv2core.profiles import add_model, load_profile
from mnv2core.study import Settings, Study
from mnv2core.techniques import catalogue

CLASSES = 10  # the synthetic dataset's
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
EXPORTED = f"""
[models.exported]
source = "onnx"
arch = "nets/exported.onnx"
mean = {list(MEAN)}
std = {list(STD)}

[techniques.ready]
epochs = 0
batch_size = 32
"""


def net_module():
    namespace = {}
    exec(NET, namespace)  # the user's CNN of test_own_model
    return namespace


def export(net: torch.nn.Module, path, dynamic: bool = True, batch: int = 1) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.rand(batch, 3, 32, 32),), str(path), dynamo=False, input_names=["x"],
                          output_names=["out"], dynamic_axes={"x": {0: "n"}, "out": {0: "n"}} if dynamic else None)


def normalized(net: torch.nn.Module):
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return lambda images: net((images - mean) / std)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A profile folder holding the case layer's tiny profile with only an exported CNN as its
    model (OpenVINO deployed too), the file, and the network it was exported from."""
    root = tmp_path_factory.mktemp("onnx")
    (root / "nets").mkdir()
    torch.manual_seed(0)
    net = net_module()["Net"](CLASSES).eval()
    with torch.no_grad():  # logits far apart: ONNX Runtime and PyTorch pick the same class
        net.fc.weight *= 100
    export(net, root / "nets" / "exported.onnx")
    text = (TINY.replace("[models.mobilenet_v2]\nweights = \"none\"\n[models.resnet50]\nweights = \"none\"\n", EXPORTED)
            .replace("[datasets.tiny]\n", "[datasets.tiny]\nmodels = [\"exported\"]\n")
            .replace("[deployment]\nbases = [\"full_ft\"]", "[deployment]\nbases = [\"ready\"]\n[deployment.openvino]")
            .replace("full_ft = 0.0\n", "full_ft = 0.0\nready = 0.0\n"))
    (root / "tiny.toml").write_text(text)
    return root, net


def study_of(root, profile_file="tiny.toml", **changes):
    profile = load_profile(str(root / profile_file), catalogue())
    profile = dataclasses.replace(profile, **changes)
    return profile, Study(profile, Settings(cache_dir=root / "cache", results_dir=root / "results"))


def run_all(study, cases) -> dict[str, dict]:
    records = {}
    for case in cases:
        try:
            record = study.run_case(case)
        except NotApplicable as exc:
            records[case.technique] = {"skipped": str(exc)}
            continue
        study.check(case, record)
        records[case.technique] = record
    return records


def test_an_onnx_file_is_deployed_as_it_is_and_never_trained(exported):
    root, net = exported
    profile, study = study_of(root)
    cases = build_grid(profile, catalogue())
    assert {c.technique for c in cases} == {"ready", *(f"ready_{d}" for d in
                                                       ("int8", "onnx", "latency", "fgsm", "pgd", "robustness",
                                                        "gradcam", "deconvnet", "openvino"))}  # no compression
    records = run_all(study, cases)
    for gradients in ("fgsm", "pgd", "gradcam", "deconvnet", "int8"):
        assert "ONNX file" in records[f"ready_{gradients}"]["skipped"]
    ready = records["ready"]["metrics"]
    test = study.data_at("tiny", 32).test
    assert ready["epochs"] == [] and ready["fit"] is None  # never trained
    assert ready["accuracy"] == pytest.approx(evaluate_fn(normalized(net), test))  # the file's, as exported
    assert 0 < ready["parameters"] <= sum(p.numel() for p in net.parameters())  # batch norm folded on export
    assert records["ready"]["provenance"]["weights"]["source"] == "onnx:exported.onnx"
    onnx_metrics = records["ready_onnx"]["metrics"]
    assert onnx_metrics["accuracy"] == ready["accuracy"] and onnx_metrics["top1_agreement"] == 1.0
    assert 0 <= onnx_metrics["ort_int8_accuracy"] <= 1
    latency = records["ready_latency"]["metrics"]
    assert latency["reference"] == "ort_fp32" and latency["runtimes"][:2] == ["ort_fp32", "ort_int8"]
    assert set(latency["runtimes_skipped"]) >= {"eager_fp32", "fx_int8"} and latency["batches_skipped"] == {}
    assert records["ready_openvino"]["metrics"]["accuracy"] == pytest.approx(ready["accuracy"], abs=1 / len(test))
    assert records["ready_robustness"]["metrics"]["accuracy"] == pytest.approx(
        evaluate_fn(normalized(net), test.spread(16)))


def evaluate_fn(forward, test) -> float:
    with torch.no_grad():
        return float((forward(test.images).argmax(1) == test.labels).float().mean())


def test_a_fixed_batch_axis_runs_in_chunks_and_is_timed_at_its_batch_only(exported, tmp_path):
    root, net = exported
    export(net, root / "nets" / "fixed.onnx", dynamic=False)
    (root / "fixed.toml").write_text((root / "tiny.toml").read_text().replace("exported.onnx", "fixed.onnx"))
    profile, _ = study_of(root, "fixed.toml")  # the same cache: the file's digest keys its entries apart
    deployments = {**profile.deployments, "latency": {**profile.deployments["latency"], "batch_sizes": [1, 4]}}
    profile, study = study_of(root, "fixed.toml", deployments=deployments)
    records = run_all(study, [c for c in build_grid(profile, catalogue())
                              if c.technique in ("ready", "ready_onnx", "ready_latency", "ready_openvino")])
    test = study.data_at("tiny", 32).test
    assert records["ready"]["metrics"]["accuracy"] == pytest.approx(evaluate_fn(normalized(net), test))
    assert records["ready_onnx"]["metrics"]["top1_agreement"] == 1.0
    latency = records["ready_latency"]["metrics"]
    assert set(latency["latency"]) >= {"ort_fp32_b1_ms", "ort_int8_b1_ms"}
    assert not any("_b4_" in key for key in latency["latency"])
    assert latency["batches_skipped"] == {"b4": "the ONNX file's batch axis is fixed at 1"}
    assert records["ready_openvino"]["metrics"]["accuracy"] == pytest.approx(
        records["ready"]["metrics"]["accuracy"], abs=1 / len(test))


def test_editing_the_file_changes_every_key_built_from_it(exported, tmp_path):
    root, net = exported
    profile, study = study_of(root)
    before = study.artifact_key("tiny", "ready", "exported").digest
    edited = tmp_path / "nets"
    edited.mkdir()
    with torch.no_grad():
        net_copy = net_module()["Net"](CLASSES)
        net_copy.load_state_dict(net.state_dict())
        net_copy.fc.bias += 1
    export(net_copy, edited / "exported.onnx")
    (tmp_path / "tiny.toml").write_text((root / "tiny.toml").read_text())
    _, moved = study_of(tmp_path)
    assert moved.artifact_key("tiny", "ready", "exported").digest != before


def write_graph(path, inputs, outputs, nodes, initializers=()):
    graph = onnx.helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("problem, message", [
    ("missing", "does not exist"),
    ("garbage", "is not an ONNX model"),
    ("vector", "the harness feeds one float32 image batch [N, 3, H, W]"),
    ("two_inputs", "has 2 inputs"),
    ("classes", "outputs 3 classes, the dataset has 10"),
])
def test_a_file_that_is_not_an_image_classifier_is_one_line(exported, tmp_path, problem, message):
    root, _ = exported
    path = tmp_path / "bad.onnx"
    info = onnx.helper.make_tensor_value_info
    if problem == "garbage":
        path.write_bytes(b"not a protobuf at all \xff\xfe")
    elif problem == "vector":
        write_graph(path, [info("x", onnx.TensorProto.FLOAT, ["n", 10])], [info("y", onnx.TensorProto.FLOAT, ["n", 10])],
                    [onnx.helper.make_node("Identity", ["x"], ["y"])])
    elif problem == "two_inputs":
        write_graph(path, [info("x", onnx.TensorProto.FLOAT, ["n", 3, 32, 32]), info("z", onnx.TensorProto.FLOAT, [1])],
                    [info("y", onnx.TensorProto.FLOAT, ["n", 3, 32, 32])], [onnx.helper.make_node("Add", ["x", "z"], ["y"])])
    elif problem == "classes":
        torch.manual_seed(0)
        export(net_module()["Net"](3), path)
    (tmp_path / "tiny.toml").write_text((root / "tiny.toml").read_text().replace("nets/exported.onnx", "bad.onnx"))
    with pytest.raises(ConfigError) as error:
        _, study = study_of(tmp_path)
        study.run_case(study.case("tiny", "ready", "exported"))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_fixed_image_size_other_than_the_datasets_is_one_line(exported, tmp_path):
    root, _ = exported
    torch.manual_seed(0)
    net = net_module()["Net"](CLASSES).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(1, 3, 48, 48),), str(tmp_path / "big.onnx"), dynamo=False)
    (tmp_path / "tiny.toml").write_text((root / "tiny.toml").read_text().replace("nets/exported.onnx", "big.onnx"))
    _, study = study_of(tmp_path)
    with pytest.raises(ConfigError, match="takes 48x48 images, the dataset's input_size is 32: set input_size = 48"):
        study.run_case(study.case("tiny", "ready", "exported"))


def test_model_option_adds_an_onnx_file(exported):
    root, _ = exported
    profile = load_profile(str(root / "tiny.toml"), catalogue())
    grown = add_model(profile, f"mine=onnx:{root / 'nets' / 'exported.onnx'}", catalogue())
    cases = {c.technique for c in build_grid(grown, catalogue()) if c.model == "mine"}
    assert "ready" in cases and "ready_latency" in cases and not any("prune" in c for c in cases)
