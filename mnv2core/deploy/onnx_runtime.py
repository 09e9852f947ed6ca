"""ONNX export (fp32, dynamic batch), checking, and inference with ONNX Runtime."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
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


def quantize_onnx_static(fp32_path: Path, int8_path: Path, calibration: list[torch.Tensor]) -> Path:
    """Static int8 quantization in QDQ format (per-channel weights), observers fed with the
    same calibration batches as FX int8.

    Weights and activations are both unsigned 8-bit (U8U8): ORT's u8 x s8 convolutions on x86
    CPUs without VNNI add pairs of products in int16 (``vpmaddubsw``), which saturates. Measured
    on an AMD EPYC family 25 model 1 (Zen 3, AVX2, no VNNI), test accuracy fp32 / U8S8 / U8S8
    with 7-bit weights (``reduce_range``) / U8U8: on the STL-10 stand-in (3,925 images)
    MobileNetV2 full_ft 0.8782 / 0.8647 / 0.8594 / 0.8777, partial_ft 0.8413 / 0.8250 / 0.8211 /
    0.8372; on the smoke grid's 512 images full_ft 0.721 / 0.697 / 0.746 / 0.725."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

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
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8)
    except Exception as exc:
        raise ExportError(f"ONNX Runtime static int8 quantization of {fp32_path} failed: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    finally:
        prepared.unlink(missing_ok=True)
    return int8_path
