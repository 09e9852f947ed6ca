"""ONNX export (fp32, dynamic batch), checking, and inference with ONNX Runtime."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper
import torch
from torch import nn

from ..errors import Mnv2BenchError
from ..execution import to_contiguous


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


def quantize_onnx_static(fp32_path: Path, int8_path: Path, calibration: list[torch.Tensor]) -> Path:
    """Static int8 quantization in QDQ format (per-channel weights), observers fed with the
    same calibration batches as FX int8.

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
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

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
    finally:
        prepared.unlink(missing_ok=True)
    uniform_weight_zero_points(int8_path)
    return int8_path


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
