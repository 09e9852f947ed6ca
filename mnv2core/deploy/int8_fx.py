"""Int8 post-training quantization in FX graph mode (x86 backend).

FX graph mode quantization is deprecated in PyTorch but still ships in 2.14; everything that
touches it lives in this module, with its deprecation warnings filtered here.
"""
from __future__ import annotations

import copy
import warnings
from typing import Iterable

import torch
from torch import nn

from ..errors import Mnv2BenchError
from ..execution import to_contiguous

BACKEND = "x86"


class QuantizationError(Mnv2BenchError):
    """A model FX could not trace, prepare or convert; the message names the layer."""


def quantize_fx(model: nn.Module, calibration: Iterable[torch.Tensor], input_size: int) -> nn.Module:
    """An int8 copy of ``model`` (CPU, eval): fusion (conv+bn+relu) is done by
    ``prepare_fx``; observers see every batch of ``calibration`` (raw [0, 1] pixels)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message="Please use quant_min and quant_max", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions", category=UserWarning)
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        torch.backends.quantized.engine = BACKEND
        float_model = to_contiguous(copy.deepcopy(model).cpu().eval())  # FX wants NCHW weights
        example = (torch.rand(1, 3, input_size, input_size),)
        try:
            prepared = prepare_fx(float_model, get_default_qconfig_mapping(BACKEND), example)
        except Exception as exc:  # FX tracing fails with many error types
            raise QuantizationError(f"FX could not trace/prepare the model: {_describe(exc)}") from exc
        with torch.no_grad():
            for batch in calibration:
                prepared(batch.cpu())
        try:
            return convert_fx(prepared)
        except Exception as exc:
            raise QuantizationError(f"FX could not convert the calibrated model: {_describe(exc)}") from exc


def _describe(exc: Exception) -> str:
    """The exception's message with the module FX was at, when it says."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
