"""Execution settings (channels_last, bf16 autocast) and frozen features computed once."""
import copy
import platform

import pytest
import torch
from tiny import tiny_splits

from mnv2core import strategies
from mnv2core.cache import ArtifactCache
from mnv2core.deploy.int8_fx import quantize_fx
from mnv2core.deploy.onnx_runtime import export_onnx, ort_logits, ort_session
from mnv2core.execution import BF16_FALLBACK_NOTE, Execution, default_allocator, keep_freed_memory
from mnv2core.frozen_features import FeatureStore, backbone_state, extract_features
from mnv2core.models import build_model
from mnv2core.profiles import TrainConfig
from mnv2core.registry import CheckFailed
from mnv2core.techniques.speed import check as check_speed
from mnv2core.training import evaluate, fit

CPU = torch.device("cpu")
CHANNELS_LAST = Execution(CPU, channels_last=True)
FIT = dict(seed=0, label="test", eval_batch_size=64)


@pytest.fixture(scope="module")
def tiny_data():
    return tiny_splits(96, 48)


def first_conv_weight(model):
    return next(p for p in model.parameters() if p.ndim == 4)


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "vgg16", "lightcnn", "mlp"])
def test_embed_then_classifier_is_the_model(name):
    model = build_model(name, 10).eval()
    size = 28 if name in ("lightcnn", "mlp") else 32
    images = torch.rand(4, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(model.classifier(model.embed(images)), model(images), atol=1e-5)
    assert not any(k.startswith(("net.fc.", "net.classifier.")) for k in backbone_state(model))


def test_fit_trains_in_channels_last_and_matches_nchw(tiny_data):
    # a tiny lr keeps the two runs on the same weights, so only the kernels differ
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-7, augment=False)
    results = {}
    for execution in (Execution(CPU), CHANNELS_LAST):
        torch.manual_seed(0)
        model = build_model("mobilenet_v2", 10)
        history = fit(model, tiny_data, cfg, params=list(model.parameters()), execution=execution, **FIT)
        results[execution.channels_last] = (model, history[-1].train_loss)
    model, loss = results[True]
    assert first_conv_weight(model).is_contiguous(memory_format=torch.channels_last)
    assert not first_conv_weight(results[False][0]).is_contiguous(memory_format=torch.channels_last)
    assert loss == pytest.approx(results[False][1], rel=1e-5)
    with torch.no_grad():
        images = tiny_data.test.images.float() / 255
        assert torch.allclose(model.eval()(images), results[False][0].eval()(images), atol=1e-4)


def test_int8_and_onnx_accept_a_channels_last_model(tiny_data, tmp_path):
    model = CHANNELS_LAST.prepare(build_model("mobilenet_v2", 10)).eval()
    images = tiny_data.test.images[:8].float() / 255
    int8 = quantize_fx(model, [images], 32)
    assert int8(images).shape == (8, 10)
    session = ort_session(export_onnx(copy.deepcopy(model), 32, tmp_path / "m.onnx"))
    with torch.no_grad():
        assert torch.allclose(ort_logits(session, images), model(images), atol=1e-3)
    assert first_conv_weight(model).is_contiguous(memory_format=torch.channels_last)  # its copy was converted


def test_bf16_is_used_only_where_the_device_supports_it(monkeypatch):
    monkeypatch.setattr("mnv2core.execution.cpu_has_native_bf16", lambda: False)
    fallback = Execution.resolve(CPU, True, amp=True)
    assert not fallback.amp and fallback.note == BF16_FALLBACK_NOTE
    monkeypatch.setattr("mnv2core.execution.cpu_has_native_bf16", lambda: True)
    native = Execution.resolve(CPU, True, amp=True)
    assert native.amp and not native.note and native.record()["amp_dtype"] == "bfloat16"
    with native.autocast():
        assert torch.mm(torch.rand(2, 2), torch.rand(2, 2)).dtype == torch.bfloat16
    assert not Execution.resolve(CPU, True, amp=False).amp


@pytest.mark.parametrize("name, train_images", [("mobilenet_v2", 0), ("resnet18", 0), ("mobilenet_v2", 40)])
def test_cached_features_give_the_same_head_as_the_backbone(tiny_data, tmp_path, name, train_images):
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-2, augment=False, train_images=train_images)
    heads, accuracies = [], []
    for store in (None, FeatureStore(ArtifactCache(tmp_path), 64, CHANNELS_LAST)):
        torch.manual_seed(0)
        model = build_model(name, 10)
        history = strategies.partial_finetune(model, tiny_data, cfg, features=store, execution=CHANNELS_LAST, **FIT)
        heads.append(model.head.weight.detach().clone())
        accuracies.append([h.test_accuracy for h in history])
    assert accuracies[0] == pytest.approx(accuracies[1], abs=1e-4)
    assert (heads[0] - heads[1]).abs().max() < 1e-3  # Adam magnifies float noise in tiny gradients


def test_features_are_computed_once_and_reused_from_disk(tiny_data, tmp_path):
    model = build_model("mobilenet_v2", 10)
    first = FeatureStore(ArtifactCache(tmp_path), 64, CHANNELS_LAST)
    features = first.splits(model, tiny_data)
    assert features.train.features.shape == (len(tiny_data.train), model.head.in_features)
    assert torch.equal(features.train.labels, tiny_data.train.labels)
    second_cache = ArtifactCache(tmp_path)
    second = FeatureStore(second_cache, 64, CHANNELS_LAST).splits(model, tiny_data)
    assert second_cache.events == [("features-tiny-mobilenet_v2-32px", "loaded")]
    assert torch.equal(second.test.features, features.test.features)
    with torch.no_grad():
        first_conv_weight(model).add_(1.0)  # another backbone: other features
    third_cache = ArtifactCache(tmp_path)
    FeatureStore(third_cache, 64, CHANNELS_LAST).splits(model, tiny_data)
    assert third_cache.events == [("features-tiny-mobilenet_v2-32px", "built")]


def test_head_accuracy_on_features_equals_the_whole_model(tiny_data):
    model = build_model("mobilenet_v2", 10)
    features = FeatureStore(None, 64, CHANNELS_LAST).splits(model, tiny_data)
    whole = evaluate(model, tiny_data.test, 64)
    assert evaluate(model.classifier, features.test, 64) == pytest.approx(whole, abs=1e-9)
    assert extract_features(model, tiny_data.test, 16).shape == features.test.features.shape


def test_features_cannot_be_augmented(tiny_data):
    model = build_model("mobilenet_v2", 10)
    features = FeatureStore(None, 64, Execution(CPU)).splits(model, tiny_data)
    with pytest.raises(ValueError, match="augmented"):
        fit(model.classifier, features, TrainConfig(epochs=1, batch_size=16, augment=True),
            params=list(model.head.parameters()), **FIT)


def test_cpu_inference_batches_are_capped_by_pixels():
    assert CHANNELS_LAST.inference_batch(256, 32) == 256
    assert CHANNELS_LAST.inference_batch(256, 96) == 64
    assert CHANNELS_LAST.inference_batch(256, 10_000) == 1
    assert CHANNELS_LAST.inference_batch(256, None) == 256  # features: no pixels
    assert Execution(torch.device("cuda"), True).inference_batch(256, 96) == 256


@pytest.mark.skipif(not platform.libc_ver()[0] == "glibc", reason="glibc only")
def test_glibc_keeps_freed_blocks_for_reuse():
    assert keep_freed_memory() == "glibc keeps freed blocks up to 1 GiB (mallopt)"


@pytest.mark.skipif(not platform.libc_ver()[0] == "glibc", reason="glibc only")
def test_the_plain_loop_is_timed_with_glibc_defaults(monkeypatch):
    calls = []
    monkeypatch.setattr("mnv2core.execution._set_thresholds", lambda libc, mmap, trim: calls.append((mmap, trim)))
    keep_freed_memory()
    with default_allocator():
        assert calls[-1] == (32 << 20, 64 << 20)
    assert calls[-1] == (1 << 30, 1 << 30)


def speed_metrics(train_speedup, required):
    rates = {f"{side}_{kind}_images_per_second": 100.0 for side in ("reference", "harness") for kind in ("train", "eval")}
    return {"images_per_second": rates, "speedup": {"train_speedup": train_speedup, "eval_speedup": 1.0},
            "train_speedup_required": required}


def test_the_speed_case_fails_when_the_harness_trains_slower_than_the_profile_allows():
    check_speed(speed_metrics(0.95, 0.9), None)
    with pytest.raises(CheckFailed, match="0.85x the plain loop, below the profile's min_train_speedup 0.9"):
        check_speed(speed_metrics(0.85, 0.9), None)
    broken = speed_metrics(1.0, 0.9)
    broken["images_per_second"].pop("harness_eval_images_per_second")
    with pytest.raises(CheckFailed, match="speeds missing"):
        check_speed(broken, None)
