"""OpenVINO on the CPU, an optional runtime (``pip install -e ".[openvino]"``): the fp32 ONNX
export read by OpenVINO, its inference precision pinned to f32 (on CPUs with bf16 OpenVINO
otherwise runs "fp32" models in bf16), and NNCF's post-training int8 quantization of it on the
same calibration images as the other runtimes. Each is compiled for one inference thread with
the latency hint, as OpenVINO's benchmark_app measures latency."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import NotApplicable
from ..onnx_model import fixed_batch, rebatched, run_in_batches

EXTRA = 'pip install -e ".[openvino]"'
MISSING = f"OpenVINO runtime not installed (the optional extra: {EXTRA})"


def missing() -> str | None:
    """Why OpenVINO cannot run here (one line naming the extra), or None."""
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        return MISSING
    return None


def require() -> None:
    if (reason := missing()) is not None:
        raise NotApplicable(reason)


def config(threads: int) -> dict[str, Any]:
    """The CPU plugin's properties: ``threads`` inference threads, the latency hint, f32."""
    return {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


def quantize_int8(fp32_onnx: Path, calibration: list[torch.Tensor]):
    """NNCF's post-training int8 of the ONNX model (its default, mixed preset: symmetric
    per-channel weights, asymmetric activations), calibrated on the same batches as the other
    runtimes: an ``openvino.Model``."""
    import nncf
    import openvino as ov

    nncf.set_log_level(40)  # ERROR: no progress bars inside pytest's output
    samples = [np.ascontiguousarray(batch.cpu().numpy()) for batch in rebatched(calibration, fixed_batch(fp32_onnx))]
    return nncf.quantize(ov.Core().read_model(str(fp32_onnx)), nncf.Dataset(samples), subset_size=len(samples))


Runner = Callable[[torch.Tensor], torch.Tensor]


def compiled(make: Callable[[], Any], threads: int = 1) -> tuple[Runner, float, dict[str, Any]]:
    """(images -> logits on OpenVINO's CPU plugin, seconds making (``make``: a path or an
    ``openvino.Model``) and compiling took, the configuration the compiled model reports)."""
    import openvino as ov

    started = time.perf_counter()
    model = ov.Core().compile_model(make(), "CPU", config(threads))
    request = model.create_infer_request()
    seconds = time.perf_counter() - started

    batch = model.input(0).get_partial_shape()[0]
    batch = batch.get_length() if batch.is_static else None

    def infer(chunk: np.ndarray) -> np.ndarray:
        (logits,) = request.infer({0: chunk}).values()
        return np.array(logits)

    def run(images: torch.Tensor) -> torch.Tensor:  # a fixed batch axis: in chunks of it
        return torch.from_numpy(run_in_batches(infer, np.ascontiguousarray(images.cpu().numpy()), batch))

    reported = {name: _plain(model.get_property(name)) for name in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS",
                                                                   "PERFORMANCE_HINT")}
    return run, seconds, reported


def versions() -> dict[str, str]:
    """OpenVINO's and NNCF's versions, and what the CPU plugin says it can do."""
    import nncf
    import openvino as ov

    return {"openvino": str(ov.get_version()), "nncf": str(nncf.__version__),
            "cpu_capabilities": " ".join(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))}


def _plain(value: Any) -> str:
    """A property as plain text (an element type by its short name: f32, bf16)."""
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)
