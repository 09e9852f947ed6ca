"""Each generic technique on several architectures (torchvision MobileNetV2 and ResNet-18,
timm's EfficientNet-Lite0 in both paddings, the builtin CIFAR ResNet-20), tiny inputs."""
import importlib.metadata
import json

import pytest
import torch
from torch import nn

from mnv2core.compression.architecture import apply_architecture, restore_model
from mnv2core.compression.channels import prune_last_conv_channels
from mnv2core.compression.unstructured import prunable_layers
from mnv2core.deploy.int8_fx import QuantizationError, quantize_fx
from mnv2core.deploy.onnx_runtime import export_onnx, ort_logits, ort_session
from mnv2core.errors import ConfigError, NotApplicable
from mnv2core.explain.gradcam import default_target_layer, grad_cam
from mnv2core.models import ModelSpec, build_model, check_spec, count_parameters, from_pretrained, preprocessing

SIZE = 32
ARCHITECTURES = {
    "mobilenet_v2": ModelSpec("mobilenet_v2"),
    "resnet18": ModelSpec("resnet18"),
    "efficientnet_lite0": ModelSpec("efficientnet_lite0", "timm", "efficientnet_lite0"),
    "tf_efficientnet_lite0": ModelSpec("tf_efficientnet_lite0", "timm", "tf_efficientnet_lite0"),
    "cifar_resnet20": ModelSpec("cifar_resnet20", "builtin", "cifar_resnet20"),
}
# the conv each network's last block ends in, and where Grad-CAM should look
LAST_CONV = {"mobilenet_v2": "net.features.18.0", "resnet18": "net.layer4.1.conv2",
             "efficientnet_lite0": "net.conv_head", "tf_efficientnet_lite0": "net.conv_head",
             # its last conv's channels are tied to the zero-padding shortcut, which Torch-Pruning
             # cannot follow: the block's first conv is pruned instead
             "cifar_resnet20": "net.layer3.2.conv1"}
GRADCAM_LAYER = {"mobilenet_v2": "net.features", "resnet18": "net.layer4", "efficientnet_lite0": "net.bn2",
                 "tf_efficientnet_lite0": "net.bn2", "cifar_resnet20": "net.layer3"}


@pytest.fixture(params=list(ARCHITECTURES))
def named_model(request):
    torch.manual_seed(0)
    return request.param, build_model(ARCHITECTURES[request.param], 10).eval()


def images(count=4):
    return torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def test_classifier_and_embedding_split_the_forward_pass(named_model):
    name, model = named_model
    x = images()
    assert torch.allclose(model.classifier(model.embed(x)), model(x), atol=1e-5)
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 10
    head = {id(p) for p in model.head.parameters()}
    assert not head & {id(p) for p in model.feature_parameters()}


def test_structured_pruning_runs_and_removes_the_predicted_parameters(named_model):
    name, model = named_model
    pruned, record = prune_last_conv_channels(model, 0.4, "l1", SIZE)
    assert record["layer"] == LAST_CONV[name]
    assert len(record["channels"]) == round(record["before"] * 0.4)
    assert count_parameters(model) - count_parameters(pruned) == record["predicted_removed_params"] > 0
    assert pruned(images()).shape == (4, 10)
    rebuilt = build_model(ARCHITECTURES[name], 10)
    apply_architecture(rebuilt, {"pruned_channels": record})
    rebuilt.load_state_dict(pruned.state_dict())  # a cached payload restores to the pruned shape
    assert torch.allclose(rebuilt.eval()(images()), pruned(images()), atol=1e-5)


def test_gradcam_finds_the_last_feature_map(named_model):
    name, model = named_model
    assert default_target_layer(model, images()) == GRADCAM_LAYER[name]
    heatmaps, classes, map_size = grad_cam(model, images())
    assert heatmaps.shape == (4, SIZE, SIZE) and map_size[0] >= 1
    assert float(heatmaps.max()) <= 1.0 and classes.shape == (4,)


def test_fx_int8_quantizes_or_says_why(named_model):
    name, model = named_model
    try:
        int8 = quantize_fx(model, [images(8)], SIZE)
    except QuantizationError as exc:
        # TensorFlow "same" padding, computed from the input shape at run time, defeats tracing
        assert name == "tf_efficientnet_lite0" and "\n" not in str(exc) and "trace" in str(exc)
        assert isinstance(exc, NotApplicable)
        return
    assert name != "tf_efficientnet_lite0"
    with torch.no_grad():
        agree = (int8(images(8)).argmax(1) == model(images(8)).argmax(1)).float().mean()
    assert agree >= 0.5  # random weights: int8 keeps most of the decisions
    assert any("quantized" in type(m).__module__ for m in int8.modules())


@pytest.mark.parametrize("name, blocks", [("mobilenet_v2", 35), ("efficientnet_lite0", 33)])
def test_fx_int8_quantizes_every_conv_bn_relu6_on_relu6s_range(name, blocks):
    """torchvision's conv-bn-ReLU6 Sequentials and timm's conv + BatchNormAct2d(ReLU6) alike:
    each fused into a quantized ConvReLU2d whose output covers 0..6 at most, not the conv's
    whole pre-activation range."""
    from torch.ao.nn.intrinsic.quantized import ConvReLU2d
    torch.manual_seed(0)
    model = build_model(ARCHITECTURES[name], 10).eval()
    int8 = quantize_fx(model, [images(8) * 4], SIZE)  # bright inputs: pre-activations past 6
    fused = [m for m in int8.modules() if isinstance(m, ConvReLU2d)]
    assert len(fused) == blocks
    assert max(m.scale * 127 for m in fused) <= 6.0 + 1e-4


def test_onnx_runtime_agrees_with_pytorch(named_model, tmp_path):
    name, model = named_model
    path = export_onnx(model, SIZE, tmp_path / f"{name}.onnx")
    logits = ort_logits(ort_session(path), images())
    with torch.no_grad():
        assert torch.allclose(logits, model(images()), atol=1e-3)


def test_unstructured_pruning_finds_the_layers_generically(named_model):
    name, model = named_model
    layers = prunable_layers(model, skip_depthwise=True)
    assert model.head_path in {n.removeprefix("net.") for n in layers}
    assert all(not (isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels) for m in layers.values())


def test_preprocessing_comes_from_the_library():
    assert preprocessing(ARCHITECTURES["tf_efficientnet_lite0"], build_model(ARCHITECTURES["tf_efficientnet_lite0"], 10).net)[:2] \
        == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's config for TensorFlow's port
    assert preprocessing(ARCHITECTURES["mobilenet_v2"])[:2] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_ready_trained_weights_keep_their_head_and_are_checked():
    torch.manual_seed(0)
    spec = ModelSpec("cifar_resnet20", "builtin", "cifar_resnet20", weights="file.pth", trained=True)
    trained = build_model(spec, 10).eval()
    kept = from_pretrained(spec, trained.net.state_dict(), 10, keep_head=True).eval()
    assert torch.equal(kept(images()), trained(images()))
    with pytest.raises(ConfigError, match="weights have 10 classes, the dataset 3"):
        from_pretrained(spec, trained.net.state_dict(), 3, keep_head=True)
    fresh = from_pretrained(spec, trained.net.state_dict(), 3)  # pretrained elsewhere: a new head
    assert fresh.head.out_features == 3


def test_a_payload_restores_any_library_network():
    spec = ARCHITECTURES["efficientnet_lite0"]
    model = build_model(spec, 10).eval()
    restored = restore_model(spec.identity(), 10, model.state_dict()).eval()
    assert torch.equal(restored(images()), model(images()))


def test_unknown_architectures_name_the_library():
    with pytest.raises(ConfigError, match="unknown model 'efficientnet_lite9' in timm"):
        build_model(ModelSpec("x", "timm", "efficientnet_lite9"), 10)
    with pytest.raises(ConfigError, match="unknown model 'vgg19' in builtin"):
        build_model(ModelSpec("x", "builtin", "vgg19"), 10)


def test_weights_made_for_another_architecture_bring_that_architectures_preprocessing():
    """TensorFlow's EfficientNet-Lite0 weights in timm's FX-traceable efficientnet_lite0: the
    inputs are normalised as timm's config for the weights' own architecture says (0.5), not
    as efficientnet_lite0's (ImageNet mean/std); the payload rebuilds it so."""
    spec = ModelSpec("lite0", "timm", "efficientnet_lite0", pretrained_cfg="tf_efficientnet_lite0")
    model = build_model(spec, 10).eval()
    assert torch.equal(model.normalize.mean.flatten(), torch.full((3,), 0.5))
    assert preprocessing(ARCHITECTURES["efficientnet_lite0"], build_model(ARCHITECTURES["efficientnet_lite0"], 10).net)[0] \
        == (0.485, 0.456, 0.406)
    assert spec.identity()["pretrained_cfg"] == "tf_efficientnet_lite0"
    assert "pretrained_cfg" not in ARCHITECTURES["efficientnet_lite0"].identity()  # older keys stay
    restored = restore_model(spec.identity(), 10, model.state_dict()).eval()
    assert torch.equal(restored.normalize.std, model.normalize.std) and torch.equal(restored(images()), model(images()))
    with pytest.raises(ConfigError, match="unknown model 'tf_efficientnet_lite9' in timm"):
        build_model(ModelSpec("x", "timm", "efficientnet_lite0", pretrained_cfg="tf_efficientnet_lite9"), 10)
    with pytest.raises(ConfigError, match="pretrained_cfg names a timm architecture's config"):
        build_model(ModelSpec("x", "torchvision", "mobilenet_v2", pretrained_cfg="tf_efficientnet_lite0"), 10)


def test_imagenet_weights_of_a_timm_model_come_from_its_pretrained_cfg(monkeypatch):
    """``weights = "imagenet"`` with ``pretrained_cfg``: timm's weights of that architecture,
    the ones its mean/std were made for (not arch's own, normalised otherwise)."""
    import timm

    from mnv2core.weights import WeightsUnavailableError, load_pretrained_state, parse_weights
    asked = []

    def create_model(name, pretrained=False, **kwargs):
        asked.append(name)
        raise RuntimeError("no network")

    monkeypatch.setattr(timm, "create_model", create_model)
    spec = ModelSpec("lite0", "timm", "efficientnet_lite0", weights="imagenet", pretrained_cfg="tf_efficientnet_lite0")
    with pytest.raises(WeightsUnavailableError, match="timm tf_efficientnet_lite0 pretrained weights could not be loaded"):
        load_pretrained_state(spec, parse_weights("imagenet"))
    assert asked == ["tf_efficientnet_lite0"]


def test_architecture_names_are_listed_once_per_library_version_then_read_by_every_process(tmp_path, monkeypatch):
    """Listing torchvision's or timm's architectures imports the library (2 s of every process
    that checks a profile): the list is kept per installed version, and a corrupt or
    unwritable file costs only the listing again."""
    from mnv2core import models
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    listed = []

    def listing():
        listed.append(1)
        return ["resnet18", "mobilenet_v2"]

    path = models.architecture_names_file("torchvision")
    assert path.parent == tmp_path / "cache" / "mnv2bench" and importlib.metadata.version("torchvision") in path.name
    assert models._remembered("torchvision", listing) == ["resnet18", "mobilenet_v2"] and len(listed) == 1
    assert models._remembered("torchvision", listing) == ["mobilenet_v2", "resnet18"] and len(listed) == 1  # read back
    with pytest.raises(ConfigError, match="unknown model 'mobilenet_v9' in torchvision; close: .*'mobilenet_v2'"):
        check_spec(ModelSpec("m", "torchvision", "mobilenet_v9"))  # checked against the kept list
    path.write_text('["resnet18", ')  # a half-written file from elsewhere
    assert models._remembered("torchvision", listing) == ["resnet18", "mobilenet_v2"] and len(listed) == 2
    assert json.loads(path.read_text()) == ["mobilenet_v2", "resnet18"]  # whole again
    monkeypatch.setenv("XDG_CACHE_HOME", str(path))  # a file where its folder should be: nothing written
    assert models._remembered("torchvision", listing) == ["resnet18", "mobilenet_v2"] and len(listed) == 3
