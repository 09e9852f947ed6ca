"""Global magnitude pruning (``torch.nn.utils.prune``), masks, and lottery-ticket rewinding."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from ..execution import to_contiguous

PRUNABLE = (nn.Conv2d, nn.Linear)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every conv and linear layer, by module name: their weights are what pruning counts."""
    return {name: module for name, module in model.named_modules() if isinstance(module, PRUNABLE)}


def prune_global_magnitude(model: nn.Module, amount: float) -> None:
    """Mask the ``amount`` fraction of the *remaining* weights with the smallest magnitude,
    ranked across all layers. Repeated calls compound (3 x 20% leaves 0.8^3 of the weights).
    torch's pruning flattens with ``view``: the model goes back to NCHW first (training puts
    it in channels_last again), and the scores are the current masked weights, contiguous."""
    to_contiguous(model)
    modules = list(prunable_layers(model).values())
    scores = {(module, "weight"): _weight(module).contiguous() for module in modules}
    prune.global_unstructured([(module, "weight") for module in modules], pruning_method=prune.L1Unstructured,
                              amount=amount, importance_scores=scores)


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


def measured_sparsity(model: nn.Module) -> float:
    """Fraction of conv/linear weights that are zero, counted from the weights."""
    zeros = total = 0
    for module in prunable_layers(model).values():
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
