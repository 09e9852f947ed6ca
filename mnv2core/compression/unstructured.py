"""Global magnitude pruning (``torch.nn.utils.prune``), masks, and lottery-ticket rewinding."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from ..errors import ConfigError
from ..execution import to_contiguous

PRUNABLE = (nn.Conv2d, nn.Linear)


def prunable_layers(model: nn.Module, skip_depthwise: bool = False) -> dict[str, nn.Module]:
    """Every conv and linear layer, by module name: their weights are what pruning counts.
    ``skip_depthwise`` leaves out depthwise convs (one 3x3 filter per channel: few weights,
    and a channel whose 9 weights are pruned is dead)."""
    return {name: module for name, module in model.named_modules() if isinstance(module, PRUNABLE)
            and not (skip_depthwise and _depthwise(module))}


def _depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


SCOPES = ("global", "layer", "normalized")


def prune_magnitude(model: nn.Module, amount: float, scope: str = "global", skip_depthwise: bool = False) -> None:
    """Mask the ``amount`` fraction of the *remaining* weights with the smallest magnitude.
    Repeated calls compound (3 x 20% leaves 0.8^3 of the weights). ``scope``:

    - ``global``: one ranking of |w| across all layers (layers with small weights, such as
      wide 1x1 convs and the classifier, can be emptied);
    - ``layer``: every layer loses ``amount`` of its own remaining weights;
    - ``normalized``: one ranking of |w| / RMS(layer's remaining weights), so each layer is
      judged against its own scale but the sparsity may still differ between layers.

    torch's pruning flattens with ``view``: the model goes back to NCHW first (training puts
    it in channels_last again), and the scores are the current masked weights, contiguous."""
    if scope not in SCOPES:
        raise ConfigError(f"pruning scope {scope!r}: choose one of {list(SCOPES)}")
    to_contiguous(model)
    modules = list(prunable_layers(model, skip_depthwise).values())
    if scope == "layer":
        for module in modules:
            # on a pruned layer torch takes ``amount`` of the weights still unpruned
            prune.l1_unstructured(module, "weight", amount=amount, importance_scores=_weight(module).contiguous())
        return
    scores = {(module, "weight"): _score(module, scope) for module in modules}
    prune.global_unstructured([(module, "weight") for module in modules], pruning_method=prune.L1Unstructured,
                              amount=amount, importance_scores=scores)


def _score(module: nn.Module, scope: str) -> torch.Tensor:
    weight = _weight(module).contiguous()
    if scope == "global":
        return weight
    remaining = weight[weight != 0]
    scale = remaining.pow(2).mean().sqrt().clamp_min(1e-12) if remaining.numel() else torch.ones(())
    return weight / scale


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Hold the given weights at zero (through training too) until ``make_permanent``."""
    layers = prunable_layers(model)
    for name, mask in masks.items():
        prune.custom_from_mask(layers[name], "weight", mask.to(layers[name].weight.device))


def make_permanent(model: nn.Module) -> None:
    """Fold masks into the weights and drop the pruning hooks and buffers: a plain model
    whose state dict loads into an unpruned network of the same shape."""
    for module in prunable_layers(model).values():
        if prune.is_pruned(module):
            prune.remove(module, "weight")


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The surviving-weight masks (True = kept) of every prunable layer, read from the
    weights themselves (after ``make_permanent``, pruned weights are exactly zero)."""
    return {name: _weight(module) != 0 for name, module in prunable_layers(model).items()}


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Share of zero weights of every conv and linear layer."""
    return {name: float((_weight(module) == 0).float().mean()) for name, module in prunable_layers(model).items()}


def empty_output_channels(model: nn.Module) -> int:
    """Output channels (conv filters, linear rows) whose weights are all zero: dead units."""
    return sum(int((_weight(module).flatten(1) != 0).sum(1).eq(0).sum()) for module in prunable_layers(model).values())


def measured_sparsity(model: nn.Module, skip_depthwise: bool = False) -> float:
    """Fraction of conv/linear weights (depthwise convs' left out when ``skip_depthwise``)
    that are zero, counted from the weights."""
    zeros = total = 0
    for module in prunable_layers(model, skip_depthwise).values():
        weight = _weight(module)
        zeros += int((weight == 0).sum())
        total += weight.numel()
    return zeros / total


def rewind(model: nn.Module, start_state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
    """Lottery ticket: load ``start_state`` (the exact tensors saved before training) into
    ``model`` and mask it: surviving weights get their initial values, pruned ones stay 0."""
    model.load_state_dict(start_state)
    apply_masks(model, masks)


def _weight(module: nn.Module) -> torch.Tensor:
    return module.weight.detach()
