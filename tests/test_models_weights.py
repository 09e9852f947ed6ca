import pytest
import torch

from mnv2core.errors import ConfigError, WeightsUnavailableError
from mnv2core.models import ModelSpec, build_model, build_network, from_pretrained
from mnv2core.weights import file_sha256, load_pretrained_state, parse_weights, resolve_weights_spec


def test_normalisation_is_inside_the_model():
    model = build_model("mobilenet_v2", 10).eval()
    pixels = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(pixels), model.net((pixels - mean) / std))


def test_unknown_model_name():
    with pytest.raises(ConfigError, match="unknown model 'vgg99' in torchvision; close: .*'vgg19'"):
        build_model("vgg99", 10)


def test_weights_file_loads_with_provenance_and_fresh_head(tmp_path):
    net = build_network("mobilenet_v2", 1000)
    path = tmp_path / "w.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, path)
    state, provenance = load_pretrained_state("mobilenet_v2", parse_weights(str(path)))
    assert provenance["sha256"] == file_sha256(path) and provenance["source"] == "file:w.pth"  # name and sha256, never the machine's path
    model = from_pretrained("mobilenet_v2", state, 10)
    assert model.head.out_features == 10
    assert torch.allclose(model.net.features[0][0].weight, net.features[0][0].weight.half().float())


def test_missing_weights_file_names_the_fix(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="MNV2BENCH_WEIGHTS_MOBILENET_V2"):
        load_pretrained_state("mobilenet_v2", parse_weights(str(tmp_path / "none.pth")))


def test_wrong_weights_file_is_reported(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"something": torch.zeros(2)}, path)
    state, _ = load_pretrained_state("mobilenet_v2", parse_weights(str(path)))
    with pytest.raises(ConfigError, match="classifier.1.weight"):
        from_pretrained("mobilenet_v2", state, 10)


def test_imagenet_weights_offline_explain_the_local_alternative(monkeypatch):
    import torchvision.models as tv

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(tv.MobileNet_V2_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(WeightsUnavailableError, match="--weights mobilenet_v2=PATH"):
        load_pretrained_state("mobilenet_v2", parse_weights("imagenet"))


def test_weights_precedence(monkeypatch):
    monkeypatch.setenv("MNV2BENCH_WEIGHTS_RESNET50", "/env/path.pth")
    assert resolve_weights_spec("resnet50", "imagenet", {}).path.as_posix() == "/env/path.pth"
    assert resolve_weights_spec("resnet50", "imagenet", {"resnet50": "none"}).kind == "none"
    monkeypatch.delenv("MNV2BENCH_WEIGHTS_RESNET50")
    assert resolve_weights_spec("resnet50", "imagenet", {}).kind == "imagenet"


def test_a_file_that_is_no_state_dict_is_named_with_the_fix(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(bytes(range(256)) * 8)  # random bytes, not a torch.save file
    source = resolve_weights_spec("mobilenet_v2", str(junk), {})
    with pytest.raises(WeightsUnavailableError) as error:
        load_pretrained_state("mobilenet_v2", source)
    assert str(error.value) == (f"weights file {junk} for mobilenet_v2 cannot be read as a tensor state dict "
                                f"(UnpicklingError); save one with torch.save(model.state_dict(), PATH) (pickled "
                                f"objects other than tensors are refused)")
    torch.save([1, 2, 3], tmp_path / "list.pth")  # a torch file, but not a state dict
    with pytest.raises(WeightsUnavailableError, match="list.pth does not hold a state dict of tensors"):
        load_pretrained_state("mobilenet_v2", resolve_weights_spec("mobilenet_v2", str(tmp_path / "list.pth"), {}))


def test_weights_for_a_model_the_run_does_not_use_stop_it_and_a_stray_variable_warns():
    from mnv2core.weights import unused_weights
    models = {"mobilenet_v2", "resnet50"}
    with pytest.raises(ConfigError, match=r"--weights names \['mobilenetv2'\], which this run does not use; "
                                          r"its models: \['mobilenet_v2', 'resnet50'\]"):
        unused_weights({"mobilenetv2": "w.pth"}, models, {})
    environ = {"MNV2BENCH_WEIGHTS_MOBILENET_V2": "a.pth", "MNV2BENCH_WEIGHTS_EFFICIENTNET_LITE0": "b.pth",
               "MNV2BENCH_PROFILE": "cpu"}
    assert unused_weights({"mobilenet_v2": "w.pth"}, models, environ) == [
        "MNV2BENCH_WEIGHTS_EFFICIENTNET_LITE0 is set but this run has no such model "
        "(its models: ['mobilenet_v2', 'resnet50']): ignored"]


def test_weights_of_the_right_network_with_a_wrong_shape_or_key_name_the_first_difference():
    spec = ModelSpec("mobilenet_v2", "torchvision", "mobilenet_v2")
    state = build_model(spec, 10).net.state_dict()
    reshaped = {**state, "features.0.0.weight": torch.zeros(16, 3, 3, 3)}
    with pytest.raises(ConfigError, match=r"features.0.0.weight is \(16, 3, 3, 3\) in the file, \(32, 3, 3, 3\) in "
                                          r"the network \(are they"):
        from_pretrained(spec, reshaped, 10)
    lacking = {k: v for k, v in state.items() if k != "features.1.conv.1.weight"}
    with pytest.raises(ConfigError, match=r"the file lacks 'features.1.conv.1.weight' \(are they"):
        from_pretrained(spec, lacking, 10)
    extra = {**state, "features.99.weight": torch.zeros(1)}
    with pytest.raises(ConfigError, match=r"the file has 'features.99.weight', which the network lacks"):
        from_pretrained(spec, extra, 10)
