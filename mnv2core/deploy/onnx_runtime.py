"""ONNX export (fp32, dynamic batch), checking, and inference with ONNX Runtime."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import numpy_helper
from torch import nn

from ..errors import Mnv2BenchError
from ..execution import to_contiguous
from .bias_correction import output_shift


class ExportError(Mnv2BenchError):
    """A model that could not be exported to ONNX or failed the checker."""


def export_onnx(model: nn.Module, input_size: int, path: Path) -> Path:
    """Write ``model`` (taking raw [0, 1] pixels) as ONNX with a dynamic batch axis and check it."""
    model = to_contiguous(model.cpu().eval())  # the exported graph takes NCHW input
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(1, 3, input_size, input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter needs no onnxscript
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["images"],
                              output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
        except Exception as exc:
            raise ExportError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path}: the exported model fails onnx.checker: {exc}") from exc
    return path


def ort_session(path: Path, threads: int = 1) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_logits(session: onnxruntime.InferenceSession, images: torch.Tensor) -> torch.Tensor:
    (logits,) = session.run(None, {"images": np.ascontiguousarray(images.cpu().numpy())})
    return torch.from_numpy(logits)


PERCENTILE = 99.999  # of each activation's calibration histogram: its int8 range


def quantize_onnx_static(fp32_path: Path, int8_path: Path, calibration: list[torch.Tensor],
                         bias_correction: bool = True) -> Path:
    """Static int8 quantization in QDQ format (per-channel weights), observers fed with the
    same calibration batches as FX int8; with ``bias_correction`` each conv's and Gemm's bias
    then absorbs the mean shift its rounded weights cause (deploy/bias_correction.py; ORT's
    quantizer has no such step). The pruned STL-10 MobileNetV2 (AMD EPYC family 25 model 17,
    Zen 4): fp32 0.8892, ORT int8 0.8731 without it.

    Weights and activations are both unsigned 8-bit (U8U8): ORT's u8 x s8 convolutions on x86
    CPUs without VNNI add pairs of products in int16 (``vpmaddubsw``), which saturates. Measured
    on an AMD EPYC family 25 model 1 (Zen 3, AVX2, no VNNI), test accuracy fp32 / U8S8 / U8S8
    with 7-bit weights (``reduce_range``) / U8U8: on the STL-10 stand-in (3,925 images)
    MobileNetV2 full_ft 0.8782 / 0.8647 / 0.8594 / 0.8777, partial_ft 0.8413 / 0.8250 / 0.8211 /
    0.8372; on the smoke grid's 512 images full_ft 0.721 / 0.697 / 0.746 / 0.725.

    Activation ranges: the 99.999th percentile of each tensor's calibration histogram, not its
    min and max (ORT's default), as FX's HistogramObserver also clips rare extremes. Measured on
    the same Zen 3, fp32 / MinMax / Percentile: the pruned STL-10 MobileNetV2 0.8578 / 0.8082 /
    0.8512; the other nine within 0.4 points of each other (STL-10 MobileNetV2 partial_ft 0.8413
    / 0.8372 / 0.8359, full_ft 0.8782 / 0.8777 / 0.8775; CIFAR-10 MobileNetV2 partial_ft 0.6702 /
    0.6622 / 0.6582, full_ft 0.7410 / 0.7404 / 0.7408, pruned 0.7552 / 0.7520 / 0.7554, distilled
    0.5944 / 0.5946 / 0.5920, EfficientNet-Lite0 full_ft 0.8250 / 0.8248 / 0.8238, pruned 0.8238 /
    0.8174 / 0.8194, ResNet-56 0.8740 / 0.8734 / 0.8738)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Batches(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter([{"images": np.ascontiguousarray(b.cpu().numpy())} for b in calibration])

        def get_next(self):
            return next(self._feeds, None)

    prepared = int8_path.with_name(int8_path.name + ".prepared.onnx")
    try:
        # as onnxruntime's own MobileNetV2 example: shape inference and graph optimisation first
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(int8_path), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": PERCENTILE})
    except Exception as exc:
        raise ExportError(f"ONNX Runtime static int8 quantization of {fp32_path} failed: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    else:
        if bias_correction:
            correct_biases(int8_path, prepared, calibration)
    finally:
        prepared.unlink(missing_ok=True)
    uniform_weight_zero_points(int8_path)
    return int8_path


def correct_biases(int8_path: Path, float_path: Path, calibration: list[torch.Tensor]) -> int:
    """Subtract from each Conv's and Gemm's bias in the QDQ model at ``int8_path`` the output
    shift of its rounded weights, against the float model it was quantized from (the same
    node names) and its inputs' channel means over ``calibration``; returns how many layers
    it corrected."""
    float_model, model = onnx.load(str(float_path)), onnx.load(str(int8_path))
    layers = {n.name: n for n in float_model.graph.node if n.op_type in ("Conv", "Gemm") and n.name}
    float_arrays = {init.name: numpy_helper.to_array(init) for init in float_model.graph.initializer}
    means = _input_means(float_model, {name: node.input[0] for name, node in layers.items()}, calibration)
    initializers = {init.name: init for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}

    def stored(name: str) -> tuple:
        """A constant's float value in the QDQ model and, when a DequantizeLinear makes it, the
        quantized initializer, its scale and zero point (shaped to broadcast) and dtype."""
        dequantize = producers.get(name)
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            init = initializers.get(name)
            return (None if init is None else numpy_helper.to_array(init)), None, None, None, None
        q, scale, zero = (initializers.get(i) for i in [*dequantize.input, ""][:3])
        if q is None or scale is None:
            return None, None, None, None, None
        axis = next((a.i for a in dequantize.attribute if a.name == "axis"), 1)
        values, scale = numpy_helper.to_array(q), numpy_helper.to_array(scale)
        zero = numpy_helper.to_array(zero) if zero is not None else np.zeros_like(scale)
        shape = [-1 if d == axis % values.ndim else 1 for d in range(values.ndim)] if scale.ndim else []
        real = (values.astype(np.float64) - zero.reshape(shape)) * scale.reshape(shape)
        return real, q, scale.reshape(shape), zero.reshape(shape), values.dtype

    corrected = 0
    for node in model.graph.node:
        float_node = layers.get(node.name)
        if float_node is None or len(node.input) < 3 or node.name not in means:
            continue
        weight, weight_q, *_ = stored(node.input[1])
        float_weight = float_arrays.get(float_node.input[1])
        bias, bias_q, bias_scale, bias_zero, bias_dtype = stored(node.input[2])
        if weight_q is None or float_weight is None or bias is None:
            continue  # weights left in float, or not constants
        error = weight - float_weight
        if node.op_type == "Gemm" and not next((a.i for a in node.attribute if a.name == "transB"), 0):
            error = error.T
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        shift = output_shift(torch.from_numpy(error), torch.from_numpy(means[node.name]), groups).numpy()
        new_bias = bias - shift
        if bias_q is None:
            initializers[node.input[2]].CopyFrom(numpy_helper.from_array(new_bias.astype(np.float32), node.input[2]))
        else:
            info = np.iinfo(bias_dtype)
            values = np.clip(np.round(new_bias / bias_scale) + bias_zero, info.min, info.max).astype(bias_dtype)
            bias_q.CopyFrom(numpy_helper.from_array(values, bias_q.name))
        corrected += 1
    onnx.save(model, str(int8_path))
    return corrected


def _input_means(model: onnx.ModelProto, inputs: dict[str, str], calibration: list[torch.Tensor]) -> dict[str, np.ndarray]:
    """Each layer's (name -> its input tensor's name) input channel means over the
    calibration batches, the float model run with those tensors as extra outputs."""
    probe = onnx.shape_inference.infer_shapes(model)
    feeds = {i.name for i in probe.graph.input}
    outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                              for t in sorted(set(inputs.values()) - feeds - outputs))
    session = onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for batch in calibration:
        images = np.ascontiguousarray(batch.cpu().numpy())
        values = dict(zip(names, session.run(None, {"images": images}), strict=True))
        values.update({name: images for name in feeds})
        for tensor in set(inputs.values()):
            x = values[tensor].astype(np.float64)
            sums[tensor] = sums.get(tensor, 0) + x.sum(axis=(0, *range(2, x.ndim)))
            counts[tensor] = counts.get(tensor, 0) + x.size // x.shape[1]
    return {layer: sums[tensor] / counts[tensor] for layer, tensor in inputs.items() if tensor in sums}


def uniform_weight_zero_points(path: Path) -> int:
    """Give every output channel of a per-channel quantized weight the same zero point;
    returns how many channels it changed.

    ORT's quantizer gives a channel whose weights are all zero (a pruned filter, a batch-norm
    gamma of 0 folded into its conv) scale 1 and zero point 0 (``quant_utils.compute_scale_zp``:
    a range below float's tiny), its symmetric neighbours 128. CPU QLinearConv's fast kernels
    need one zero point per weight: with two, EfficientNet-Lite0's five such depthwise convs took
    21 of its 23 ms (batch 1, 96 px, one Zen 3 thread; 2.3 ms for the whole MobileNetV2), and
    ORT int8 ran 4x slower than fp32. Such a channel's quantized values equal its zero point,
    so moving both to the common zero point keeps every weight exactly 0.0."""
    model = onnx.load(str(path))
    initializers = {init.name: init for init in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3:
            continue
        weight, zero_point = initializers.get(node.input[0]), initializers.get(node.input[2])
        if weight is None or zero_point is None or len(zero_point.dims) != 1:
            continue
        points = numpy_helper.to_array(zero_point).copy()
        kinds, counts = np.unique(points, return_counts=True)
        if len(kinds) < 2:
            continue  # already one zero point: the weights need not be read
        common, values = kinds[counts.argmax()], numpy_helper.to_array(weight).copy()
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        channels = np.moveaxis(values, axis, 0)  # a view: writing to it writes to values
        odd = [c for c in np.flatnonzero(points != common) if (channels[c] == points[c]).all()]
        for channel in odd:
            channels[channel], points[channel] = common, common
        if odd:
            weight.CopyFrom(numpy_helper.from_array(values, weight.name))
            zero_point.CopyFrom(numpy_helper.from_array(points, zero_point.name))
            changed += len(odd)
    if changed:
        onnx.save(model, str(path))
    return changed
