"""Int8 post-training quantization in FX graph mode (x86 backend).

FX graph mode quantization is deprecated in PyTorch but still ships in 2.14; everything that
touches it lives in this module, with its deprecation warnings filtered here.

FX fuses conv+bn+ReLU but not ReLU6, which it treats as sharing its input's observer: each
MobileNetV2 block's output was quantized over the conv's whole pre-activation range (say
-30..25) though ReLU6 keeps 0..6, a tenth of the levels. Here a conv-bn-ReLU6 chain is
quantized as a fused conv-bn-ReLU whose output observer sees its values clipped at 6,
followed by ReLU6's clamp (7-bit activations, x86's ``reduce_range``, do not saturate at 6
by themselves). Imagenette 96 px, partial_ft, 256 calibration images, 1,000 test images:
fp32 0.842; FX's defaults 0.790; ReLU6 as here 0.837. The chains are found in the traced
graph, so timm's blocks (batch norm and ReLU6 in one ``BatchNormAct2d``, split first) are
quantized alike: EfficientNet-Lite0 on the STL-10 stand-in lost 6.2 points (full_ft, 0.884)
before.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable

import torch
from torch import nn

from ..errors import NotApplicable
from ..execution import to_contiguous
from .bias_correction import InputMeans, output_shift

BACKEND = "x86"


class QuantizationError(NotApplicable):
    """A model FX could not trace, prepare or convert (its int8 cases are skipped with this
    reason)."""


def quantize_fx(model: nn.Module, calibration: Iterable[torch.Tensor], input_size: int,
                bias_correction: bool = True) -> nn.Module:
    """An int8 copy of ``model`` (CPU, eval): fusion (conv+bn+relu, and conv+bn+ReLU6 as
    above) is done by ``prepare_fx``; observers see every batch of ``calibration`` (raw [0, 1]
    pixels); with ``bias_correction`` each quantized layer's bias then absorbs the mean shift
    its rounded weights cause (deploy/bias_correction.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message="Please use quant_min and quant_max", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions", category=UserWarning)
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        torch.backends.quantized.engine = BACKEND
        float_model = to_contiguous(copy.deepcopy(model).cpu().eval())  # FX wants NCHW weights
        example = (torch.rand(1, 3, input_size, input_size),)
        try:
            prepared = prepare_fx(float_model, _qconfig_mapping(float_model), example)
        except Exception as exc:  # FX tracing fails with many error types
            raise QuantizationError(f"FX could not trace/prepare the model: {_describe(exc)}") from exc
        layers = {name: m for name, m in prepared.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
        with torch.no_grad(), InputMeans(layers if bias_correction else {}) as means:
            for batch in calibration:
                prepared(batch.cpu())
        float_weights = {name: m.weight.detach().clone() for name, m in layers.items()}
        try:
            quantized = convert_fx(prepared)
        except Exception as exc:
            raise QuantizationError(f"FX could not convert the calibrated model: {_describe(exc)}") from exc
        if bias_correction:
            _correct_biases(quantized, layers, float_weights, means)
        return quantized


def _correct_biases(quantized: nn.Module, layers: dict[str, nn.Module], float_weights: dict[str, torch.Tensor],
                    means: InputMeans) -> None:
    """Each quantized conv or linear layer's bias minus the output shift of its rounded
    weights. ``layers`` are the prepared model's float layers: a fused conv-bn(-ReLU) is a
    conv inside a fused module of the same name as its quantized replacement."""
    replacements = dict(quantized.named_modules())
    for name, layer in layers.items():
        target = replacements.get(name)
        if not hasattr(target, "set_weight_bias"):
            target = replacements.get(name.rpartition(".")[0])
        if not hasattr(target, "set_weight_bias") or name not in means:
            continue  # kept in float, or never run
        weight = target.weight()
        shift = output_shift(weight.dequantize() - float_weights[name], means[name], getattr(layer, "groups", 1))
        bias = target.bias()
        target.set_weight_bias(weight, (torch.zeros_like(shift) if bias is None else bias.detach()) - shift)


def _qconfig_mapping(model: nn.Module):
    """x86's default mapping; every conv -> batch norm -> ReLU6 chain of ``model`` is rewritten
    (in place) as conv-bn-ReLU, observed clipped at 6, then ReLU6."""
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import HistogramObserver

    class ReLU6Observer(HistogramObserver):
        """Observes what ReLU6 would output: the fused conv-bn-ReLU's values clipped at 6."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            super().forward(x.clamp(max=6.0))
            return x

    mapping = get_default_qconfig_mapping(BACKEND)
    default = mapping.global_qconfig
    relu6 = QConfig(activation=ReLU6Observer.with_args(reduce_range=True), weight=default.weight)
    _split_norm_act(model)
    for conv, bn, act in _conv_bn_relu6_chains(model):
        parent, _, leaf = act.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, nn.Sequential(nn.ReLU(), nn.ReLU6()).eval())
        for name in (conv, bn, act):
            mapping.set_module_name(name, relu6)
    return mapping


def _split_norm_act(model: nn.Module) -> None:
    """timm's batch norm with its activation in one module (``BatchNormAct2d``) becomes a plain
    BatchNorm2d followed by the activation, the layout FX fuses with the conv before it."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d) and type(child) is not nn.BatchNorm2d and hasattr(child, "act") \
                    and isinstance(getattr(child, "drop", nn.Identity()), nn.Identity):
                bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
                bn.load_state_dict(child.state_dict())
                act = child.act
                setattr(parent, name, bn.eval() if isinstance(act, nn.Identity) else nn.Sequential(bn, act).eval())


def _conv_bn_relu6_chains(model: nn.Module) -> list[tuple[str, str, str]]:
    """(conv, batch norm, ReLU6) module names, each feeding only the next, from the traced graph."""
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())

    def module_input(node, kind):
        source = node.args[0] if node.args else None
        ok = (isinstance(source, torch.fx.Node) and source.op == "call_module"
              and isinstance(modules.get(source.target), kind) and len(source.users) == 1)
        return source if ok else None

    chains = []
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.ReLU6):
            bn = module_input(node, nn.BatchNorm2d)
            conv = bn and module_input(bn, nn.Conv2d)
            if conv:
                chains.append((conv.target, bn.target, node.target))
    return chains


def _describe(exc: Exception) -> str:
    """The exception's message with the module FX was at, when it says."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
