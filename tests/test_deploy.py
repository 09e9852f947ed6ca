import types

import pytest
import torch
from torch import nn

from mnv2core.deploy.attacks import fgsm
from mnv2core.deploy.int8_fx import QuantizationError, quantize_fx
from mnv2core.deploy.latency import measure_latencies
from mnv2core.deploy.onnx_runtime import export_onnx, ort_int8_session, ort_logits, ort_session
from mnv2core.deploy.robustness import blur_kernel_size, gaussian_blur, gaussian_noise
from mnv2core.models import build_model


def test_fgsm_step_is_epsilon_times_the_gradient_sign_and_hurts_accuracy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    images = torch.rand(64, 3, 2, 2) * 0.5 + 0.25  # far enough from 0 and 1 that nothing clamps
    labels = model(images).argmax(1)  # clean accuracy 1.0 by construction
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), labels), x)
    attacked = fgsm(model, images, labels, 0.05)
    assert torch.equal(attacked - images, (0.05 * grad.sign() + images) - images)
    # the gradient's sign hurts far more than a random sign of the same size (a sign error in
    # the step would help the model instead)
    def accuracy(x):
        return (model(x).argmax(1) == labels).float().mean().item()
    random_sign = images + 0.2 * torch.randint(0, 2, images.shape, generator=torch.Generator().manual_seed(1)) * 2 - 0.2
    assert accuracy(fgsm(model, images, labels, 0.2)) < accuracy(random_sign) - 0.2
    assert fgsm(model, images, labels, 10.0).min() >= 0 and fgsm(model, images, labels, 10.0).max() <= 1


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", 10).eval()
    with torch.no_grad():  # give the batch norms realistic statistics
        model.train()
        model(torch.rand(64, 3, 32, 32))
        model.eval()
    return model


def test_fx_int8_quantizes_mobilenet_and_tracks_fp32(mobilenet):
    images = torch.rand(32, 3, 32, 32)
    int8 = quantize_fx(mobilenet, [images[:16], images[16:]], 32)
    kinds = {type(m).__module__ for m in int8.modules()}
    assert any("quantized" in kind for kind in kinds)
    with torch.no_grad():
        reference, quantized = mobilenet(images), int8(images)
    assert quantized.shape == (32, 10)
    assert torch.corrcoef(torch.stack([reference.flatten(), quantized.flatten()]))[0, 1] > 0.9


def test_a_conv_bn_relu6_block_is_quantized_on_relu6s_range():
    """Pre-activations spanning -30..30: quantized over that range (FX's default, ReLU6
    sharing the conv's observer) ReLU6's 0..6 would get ~25 of 256 levels; fused as
    conv-bn-ReLU clipped at 6, the int8 output tracks ReLU6 within a few of its own steps."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6())
    with torch.no_grad():
        block[0].weight.mul_(30.0)
    model = nn.Sequential(block, nn.Flatten()).eval()
    images = torch.rand(64, 3, 8, 8)
    int8 = quantize_fx(model, [images[:32], images[32:]], 8)
    with torch.no_grad():
        reference, quantized = model(images), int8(images)
    step = 6.0 / 127  # x86's activations: 7 bits
    assert reference.min() == 0 and reference.max() == 6 and quantized.max() <= 6 + 1e-6
    assert (quantized - reference).abs().mean() < step / 2
    assert isinstance(model[0][2], nn.ReLU6)  # the caller's model is left as it was


def test_an_untraceable_model_is_a_quantization_error():
    class DataDependent(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(QuantizationError, match="FX could not trace"):
        quantize_fx(DataDependent(), [torch.rand(1, 3, 8, 8)], 8)


def test_onnx_export_matches_pytorch_with_a_dynamic_batch(mobilenet, tmp_path):
    path = export_onnx(mobilenet, 32, tmp_path / "model.onnx")
    session = ort_session(path)
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ort_logits(session, images), mobilenet(images), atol=1e-4)


def test_latency_reports_median_and_iqr_in_milliseconds(monkeypatch):
    from mnv2core.deploy import latency
    clock = [0.0]
    monkeypatch.setattr(latency, "time", types.SimpleNamespace(perf_counter=lambda: clock[0],
                                                               process_time=lambda: clock[0]))
    durations = iter([50.0, 4.0, 1.0, 10.0, 3.0, 2.0])  # ms: one warm-up call (not counted), five rounds

    def run():
        clock[0] += next(durations) / 1000

    stats = measure_latencies({"run": run}, warmup=1, rounds=5)
    # rounds 1, 2, 3, 4, 10 ms: median 3, quartiles 1.5 and 7 (exclusive method), min 1; the CPU its own
    assert stats == {"run": pytest.approx({"median_ms": 3.0, "iqr_ms": 5.5, "min_ms": 1.0, "rounds": 5,
                                           "cpu_share": 1.0})}


def test_a_run_that_got_part_of_a_core_is_flagged_as_timed_under_load(monkeypatch):
    from mnv2core.deploy import latency
    from mnv2core.techniques.latency import under_load
    wall, cpu = [0.0], [0.0]
    monkeypatch.setattr(latency, "time", types.SimpleNamespace(perf_counter=lambda: wall[0],
                                                               process_time=lambda: cpu[0]))

    def runner(share):
        def run():
            wall[0] += 0.002
            cpu[0] += 0.002 * share  # the rest of the 2 ms another process had the core
        return run

    stats = measure_latencies({"alone": runner(1.0), "loaded": runner(0.6)}, warmup=1, rounds=4)
    share = {name: s["cpu_share"] for name, s in stats.items()}
    assert share == pytest.approx({"alone": 1.0, "loaded": 0.6})
    assert under_load(share, threads=1) == ["loaded"]
    assert under_load(share, threads=2) == []  # at two threads a run's own share is not one core: not judged


def test_latency_rounds_take_every_run_in_turn_so_a_load_slows_them_alike(monkeypatch):
    from mnv2core.deploy import latency
    clock, calls = [0.0], []
    monkeypatch.setattr(latency, "time", types.SimpleNamespace(perf_counter=lambda: clock[0],
                                                               process_time=lambda: clock[0]))

    def runner(name, ms):
        def run():
            calls.append(name)
            # a load that doubles every call's time during the first half of the calls
            clock[0] += ms * (2 if len(calls) <= 9 else 1) / 1000
        return run

    stats = measure_latencies({"a": runner("a", 1.0), "b": runner("b", 4.0), "c": runner("c", 2.0)}, warmup=1, rounds=4)
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    # back to back, "a" would have run under the load only and "c" free of it; taken in turn,
    # each run spends two rounds under it and two free: the ratios are the loads' ratios
    assert [stats[n]["median_ms"] for n in "abc"] == pytest.approx([1.5, 6.0, 3.0])


def test_blur_and_noise():
    flat = torch.full((2, 3, 16, 16), 0.5)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat)
    stripes = torch.zeros(1, 3, 16, 16)
    stripes[..., ::2] = 1
    assert gaussian_blur(stripes, 1.0).std() < stripes.std() / 4
    assert blur_kernel_size(0.5) == 5 and blur_kernel_size(2) == 13
    noisy = gaussian_noise(flat, 0.1, torch.Generator().manual_seed(0))
    assert 0.08 < (noisy - flat).std() < 0.12 and noisy.min() >= 0


def test_onnx_runtime_static_int8_tracks_fp32(mobilenet, tmp_path):
    from mnv2core.deploy.onnx_runtime import quantize_onnx_static
    fp32 = export_onnx(mobilenet, 32, tmp_path / "model.onnx")
    calibration = [torch.rand(16, 3, 32, 32) for _ in range(2)]
    int8 = quantize_onnx_static(fp32, tmp_path / "model.int8.onnx", calibration)
    assert int8.stat().st_size < fp32.stat().st_size / 2
    images = torch.rand(8, 3, 32, 32)
    reference, quantized = ort_logits(ort_session(fp32), images), ort_logits(ort_int8_session(int8), images)
    assert quantized.shape == (8, 10)
    assert torch.corrcoef(torch.stack([reference.flatten(), quantized.flatten()]))[0, 1] > 0.9


def per_channel_zero_points(path, quantized: set[str]):
    """The zero points of the DequantizeLinear nodes of the ``quantized`` initializers."""
    import onnx
    from onnx import numpy_helper
    graph = onnx.load(str(path)).graph
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    return [initializers[node.input[2]] for node in graph.node if node.op_type == "DequantizeLinear"
            and node.input[0] in quantized and len(node.input) > 2]


def test_ort_int8_weights_are_signed_symmetric_and_per_channel_a_pruned_channel_too(tmp_path):
    """The layout of ORT's fast int8 convolutions: s8 weights whose zero points are all 0 (a
    channel of zeros, pruned, included), one scale per output channel."""
    import onnx

    from mnv2core.deploy.onnx_runtime import quantize_onnx_static
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    with torch.no_grad():
        model[2].weight[3] = 0  # a pruned depthwise filter
    fp32 = export_onnx(model, 16, tmp_path / "model.onnx")
    int8 = quantize_onnx_static(fp32, tmp_path / "model.int8.onnx", [torch.rand(8, 3, 16, 16) for _ in range(2)])
    graph = onnx.load(str(int8)).graph
    weights = [init for init in graph.initializer if init.name.endswith("_quantized") and len(init.dims) >= 2]
    assert len(weights) == 3 and {init.data_type for init in weights} == {onnx.TensorProto.INT8}
    points = per_channel_zero_points(int8, {init.name for init in weights})
    assert [len(p) for p in points] == [8, 8, 10] and all((p == 0).all() for p in points)
    images = torch.rand(16, 3, 16, 16)
    reference, quantized = model(images).detach(), ort_logits(ort_int8_session(int8), images)
    assert torch.corrcoef(torch.stack([reference.flatten(), quantized.flatten()]))[0, 1] > 0.99


@pytest.mark.parametrize("flags, fast", [(["sse4_2", "avx2", "fma"], False), (["avx2", "avx512f"], False),
                                         (["avx2", "avx512f", "avx512_vnni"], True), (["avx2", "avx_vnni"], True),
                                         (["avx512_vnni", "amx_int8", "amx_tile"], True)])
def test_ort_int8_runs_exact_kernels_on_a_cpu_without_an_int8_dot_product(flags, fast, tmp_path, mobilenet):
    """VNNI or AMX: the fast kernels, no session option; none (Zen 3, Skylake): the exact
    U8U8 kernels, which the session is then told to use."""
    from mnv2core.deploy.onnx_runtime import EXACT_INT8, int8_kernels
    kernels = int8_kernels(flags)
    assert kernels.session_options == ({} if fast else {EXACT_INT8: "1"})
    assert kernels.record()["kernels"].startswith("fast" if fast else "exact")
    assert set(kernels.record()["cpu_flags"]) <= set(flags)
    options = ort_session(export_onnx(mobilenet, 32, tmp_path / "model.onnx"),
                          config=kernels.session_options).get_session_options()
    if fast:
        with pytest.raises(RuntimeError):  # never set
            options.get_session_config_entry(EXACT_INT8)
    else:
        assert options.get_session_config_entry(EXACT_INT8) == "1"


def test_ort_int8_ranges_ignore_a_rare_calibration_extreme(tmp_path):
    """Activation ranges from the calibration histogram's percentile: one stray value among
    many no longer stretches a tensor's range, as ORT's default min/max lets it."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from mnv2core.deploy.onnx_runtime import quantize_onnx_static
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Flatten(), nn.Linear(8 * 16, 10)).eval()
    fp32 = export_onnx(model, 4, tmp_path / "model.onnx")
    calibration = [torch.rand(2048, 3, 4, 4) for _ in range(8)]
    calibration[0][0, 0, 0, 0] = 300.0  # one of 786,432 input values (and 8 of 2 M of each conv output)

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"images": batch.numpy()} for batch in calibration])

        def get_next(self):
            return next(self.feeds, None)

    min_max = tmp_path / "minmax.int8.onnx"
    quantize_static(str(fp32), str(min_max), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8)
    ours = quantize_onnx_static(fp32, tmp_path / "model.int8.onnx", calibration)
    images = torch.rand(64, 3, 4, 4)
    reference = ort_logits(ort_session(fp32), images)

    def error(path):
        return float((ort_logits(ort_int8_session(path), images) - reference).abs().mean() / reference.abs().mean())

    assert error(ours) < 0.15 < 0.5 < error(min_max)  # measured 0.09 and 0.92


class Branchy(nn.Module):
    """Control flow on a tensor's value: torch.export cannot capture it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else -self.conv(x)


def small_convnet():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


def test_compiled_fp32_and_pt2e_int8_track_eager_at_every_batch_size():
    """Inductor fp32 matches eager; PT2E int8 (torchao, calibrated, compiled with freezing)
    tracks it; both serve batch 1 (compiled first) and other batch sizes after."""
    import torchao

    from mnv2core.deploy.compiled import compile_fp32, compile_pt2e_int8
    assert torchao.__version__.startswith("0.18")  # the pinned release that imports with torch 2.14
    model, example = small_convnet(), torch.rand(1, 3, 16, 16)
    fp32, fp32_seconds = compile_fp32(model, example)
    int8, int8_seconds = compile_pt2e_int8(model, example, [torch.rand(8, 3, 16, 16) for _ in range(4)])
    assert fp32_seconds > 0 and int8_seconds > 0
    for batch in (1, 5):
        images = torch.rand(batch, 3, 16, 16)
        with torch.no_grad():
            reference = model(images)
        assert torch.allclose(fp32(images), reference, atol=1e-4)
        quantized = int8(images)
        assert quantized.shape == reference.shape
        assert torch.corrcoef(torch.stack([reference.flatten(), quantized.flatten()]))[0, 1] > 0.95


class TwoConvs(nn.Module):
    """A model class of its own: Dynamo's compile cache is per class's forward."""

    def __init__(self):
        super().__init__()
        self.layers = small_convnet()

    def forward(self, x):
        return self.layers(x)


def test_every_instance_of_a_class_is_compiled_not_only_the_first_eight():
    """Dynamo's default stops compiling a function after 8 compilations and runs it eager,
    silently: a process that compiles every base of one architecture (batch 1, then
    another batch size) would time eager PyTorch under the compiled label."""
    from torch._dynamo.utils import counters

    from mnv2core.deploy.compiled import compile_fp32
    example, batch = torch.rand(1, 3, 16, 16), torch.rand(3, 3, 16, 16)
    for _ in range(6):  # 12 compilations of TwoConvs.forward
        compiled_before = counters["frames"]["ok"]
        model = TwoConvs().eval()
        fp32, _ = compile_fp32(model, example)
        fp32(batch)  # another batch size: compiled again (dynamic)
        assert counters["frames"]["ok"] >= compiled_before + 2, dict(counters["frames"])
        with torch.no_grad():
            assert torch.allclose(fp32(batch), model(batch), atol=1e-4)


def test_a_model_export_cannot_capture_is_one_line_naming_the_runtime():
    from mnv2core.deploy.compiled import CompileError, compile_pt2e_int8
    with pytest.raises(CompileError, match=r"^PT2E int8 failed: \w+") as error:
        compile_pt2e_int8(Branchy().eval(), torch.rand(1, 3, 8, 8), [torch.rand(2, 3, 8, 8)])
    assert "\n" not in str(error.value)


def test_bf16_runtimes_track_eager_in_bf16_and_keep_float32_in_and_out():
    """Eager and compiled bf16 run the model in bf16 (on a CPU without native bf16 emulated,
    which is why the harness times them only where the CPU has it)."""
    from mnv2core.deploy.compiled import compile_bf16, eager_bf16
    model, example = small_convnet(), torch.rand(1, 3, 16, 16)
    images = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        reference = model(images)
        in_bf16 = model.to(torch.bfloat16)(images.to(torch.bfloat16)).float()
    model.float()
    for make in (eager_bf16, compile_bf16):
        run, seconds = make(model, example)
        logits = run(images)
        assert seconds > 0 and logits.dtype == torch.float32
        assert torch.allclose(logits, in_bf16, atol=0.05) and not torch.equal(logits, reference)


def test_openvino_runs_the_onnx_export_at_f32_and_nncf_int8_tracks_it(tmp_path):
    from mnv2core.deploy import openvino_runtime
    model = small_convnet()
    path = export_onnx(model, 16, tmp_path / "m.onnx")
    fp32, seconds, reported = openvino_runtime.compiled(lambda: str(path), threads=1)
    assert seconds > 0 and reported == {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1",
                                        "PERFORMANCE_HINT": "LATENCY"}
    calibration = [torch.rand(8, 3, 16, 16) for _ in range(4)]
    int8, _, _ = openvino_runtime.compiled(lambda: openvino_runtime.quantize_int8(path, calibration))
    images = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        reference = model(images)
    assert torch.allclose(fp32(images), reference, atol=1e-4)
    quantized = int8(images)
    assert quantized.shape == reference.shape and not torch.allclose(quantized, reference, atol=1e-6)
    assert torch.corrcoef(torch.stack([reference.flatten(), quantized.flatten()]))[0, 1] > 0.95


def test_without_the_openvino_extra_its_runtime_is_not_applicable_naming_the_extra(monkeypatch):
    from mnv2core.deploy import openvino_runtime
    from mnv2core.errors import NotApplicable
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)  # import openvino raises ImportError
    assert openvino_runtime.missing() == openvino_runtime.MISSING
    with pytest.raises(NotApplicable, match=r'pip install -e "\.\[openvino\]"'):
        openvino_runtime.require()
