"""ONNX export (fp32, dynamic batch), checking, and inference with ONNX Runtime."""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import Mnv2BenchError
from ..execution import int8_dot_product, to_contiguous
from ..onnx_model import fixed_batch, rebatched, run_in_batches
from ..onnx_model import ort_session as ort_session  # the harness's one way to open a session, used from here
from .bias_correction import output_shift

if TYPE_CHECKING:  # imported where used: onnx takes a second to import, and every run imports this module
    import onnx
    import onnxruntime


class ExportError(Mnv2BenchError):
    """A model that could not be exported to ONNX or failed the checker."""


def export_onnx(model: nn.Module, input_size: int, path: Path) -> Path:
    """Write ``model`` (taking raw [0, 1] pixels) as ONNX with a dynamic batch axis and check it."""
    import onnx
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


# without an int8 dot product (execution.INT8_DOT_PRODUCT_FLAGS) ORT adds u8 x s8 products in
# int16 pairs (vpmaddubsw), which saturates, unless the session asks for exact (U8U8) kernels
EXACT_INT8 = "session.x64quantprecision"  # onnxruntime_session_options_config_keys.h


@dataclass(frozen=True)
class Int8Kernels:
    """How ONNX Runtime runs int8 on this CPU: the fast kernels where it has an int8 dot
    product (``flags``), the exact U8U8 ones where it has none."""

    flags: tuple[str, ...]

    @property
    def session_options(self) -> dict[str, str]:
        return {} if self.flags else {EXACT_INT8: "1"}

    def record(self) -> dict[str, Any]:
        return {"weights": "s8, symmetric, per channel", "activations": "u8, per tensor", "format": "QDQ",
                "kernels": "fast (int8 dot product)" if self.flags else f"exact U8U8 ({EXACT_INT8}=1: no int8 dot "
                                                                          f"product, s8 weights would saturate)",
                "cpu_flags": list(self.flags), "session_options": self.session_options}


def int8_kernels(cpu_flags: Iterable[str] | None = None) -> Int8Kernels:
    """The int8 kernel choice for a CPU with ``cpu_flags`` (default: this machine's)."""
    return Int8Kernels(tuple(int8_dot_product(None if cpu_flags is None else frozenset(cpu_flags))))


def ort_int8_session(path: Path, threads: int = 1) -> onnxruntime.InferenceSession:
    """A session of the int8 model at ``path`` on the kernels ``int8_kernels()`` picks for this
    CPU: the one way to open an int8 file, since a plain session on a CPU without an int8 dot
    product runs the saturating kernels."""
    return ort_session(path, threads, int8_kernels().session_options)


def session_batch(session: onnxruntime.InferenceSession) -> int | None:
    """The session's fixed batch size (None: its batch axis is dynamic)."""
    size = session.get_inputs()[0].shape[0]
    return size if isinstance(size, int) and size > 0 else None


def ort_logits(session: onnxruntime.InferenceSession, images: torch.Tensor) -> torch.Tensor:
    """Logits of ``images`` (any count: a fixed batch axis is run in chunks)."""
    def run(chunk: np.ndarray) -> np.ndarray:
        (logits,) = session.run(None, {"images": chunk})
        return logits
    return torch.from_numpy(run_in_batches(run, np.ascontiguousarray(images.cpu().numpy()), session_batch(session)))


PERCENTILE = 99.999  # of each activation's calibration histogram: its int8 range


def quantize_onnx_static(fp32_path: Path, int8_path: Path, calibration: list[torch.Tensor],
                         bias_correction: bool = True) -> Path:
    """Static int8 quantization in QDQ format, observers fed with the same calibration batches
    as FX int8; with ``bias_correction`` each conv's and Gemm's bias then absorbs the mean shift
    its rounded weights cause (deploy/bias_correction.py; ORT's quantizer has no such step).

    Weights signed, symmetric (zero point 0) and per output channel, activations unsigned per
    tensor: the layout ORT's fast int8 convolutions (VNNI, AMX, depthwise included) need;
    unsigned weights fall back to im2col and a generic GEMM. On a CPU without an int8 dot
    product the same model runs exact with ``int8_kernels().session_options``.

    Activation ranges: the 99.999th percentile of each tensor's calibration histogram, not its
    min and max (ORT's default), as FX's HistogramObserver also clips rare extremes (min and max
    had cost the pruned STL-10 MobileNetV2 5 points)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    calibration = rebatched(calibration, fixed_batch(fp32_path))

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
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"CalibPercentile": PERCENTILE, "WeightSymmetric": True,
                                       "ActivationSymmetric": False})
    except Exception as exc:
        raise ExportError(f"ONNX Runtime static int8 quantization of {fp32_path} failed: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    else:
        if bias_correction:
            correct_biases(int8_path, prepared, calibration)
    finally:
        prepared.unlink(missing_ok=True)
    return int8_path


def correct_biases(int8_path: Path, float_path: Path, calibration: list[torch.Tensor]) -> int:
    """Subtract from each Conv's and Gemm's bias in the QDQ model at ``int8_path`` the output
    shift of its rounded weights, against the float model it was quantized from (the same
    node names) and its inputs' channel means over ``calibration``; returns how many layers
    it corrected."""
    import onnx
    from onnx import numpy_helper
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
    import onnx
    import onnxruntime
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
