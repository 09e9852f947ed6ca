"""Structured pruning: physically remove output channels of a network's last conv, with
every layer coupled to them (its batch norm, residual partners, the classifier inputs they
feed) fixed by Torch-Pruning's dependency graph, on any architecture it can trace."""
from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigError, NotApplicable

CRITERIA = ("l1", "l2", "bn_gamma")


CANDIDATES = 3  # convs tried from the last backwards, when pruning one breaks the forward pass


def regular_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every regular (not depthwise) conv, in module order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and not (m.groups > 1 and m.groups == m.in_channels)]


def last_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The last regular conv in module order: the last conv block's."""
    convs = regular_convs(model)
    if not convs:
        raise NotApplicable(f"{type(model).__name__} has no conv layer to prune channels of")
    return convs[-1]


def _dependency_graph(model: nn.Module, input_size: int):
    import torch_pruning as tp

    device = next(model.parameters()).device
    example = torch.zeros(1, 3, input_size, input_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    except Exception as exc:  # tracing fails with many error types
        raise NotApplicable(f"Torch-Pruning cannot trace {type(model).__name__}: {_first_line(exc)}") from None
    finally:
        model.train(was_training)


def _group(model: nn.Module, layer: str, channels: list[int], input_size: int):
    import torch_pruning as tp

    graph = _dependency_graph(model, input_size)
    conv = model.get_submodule(layer)
    try:
        return graph, graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=channels)
    except Exception as exc:
        raise NotApplicable(f"Torch-Pruning cannot group {layer}'s channels: {_first_line(exc)}") from None


def channel_importance(model: nn.Module, criterion: str = "l1", layer: str | None = None,
                       input_size: int = 32) -> torch.Tensor:
    """One score per output channel of ``layer`` (default: the last conv): the L1 or L2 norm
    of its filter, or the |gamma| of the batch norm Torch-Pruning couples to it."""
    name, conv = (layer, model.get_submodule(layer)) if layer else last_conv(model)
    weight = conv.weight.detach().flatten(1)
    if criterion == "l1":
        return weight.abs().sum(1)
    if criterion == "l2":
        return weight.pow(2).sum(1).sqrt()
    if criterion == "bn_gamma":
        _, group = _group(model, name, list(range(conv.out_channels)), input_size)
        norms = [dep.target.module for dep, _ in group if isinstance(dep.target.module, nn.BatchNorm2d)]
        if not norms:
            raise ConfigError(f"{name} feeds no batch norm: use criterion l1 or l2")
        return norms[0].weight.detach().abs()
    raise ConfigError(f"unknown channel importance criterion {criterion!r}; choose from {list(CRITERIA)}")


def prune_last_conv_channels(model: nn.Module, ratio: float, criterion: str = "l1",
                             input_size: int = 32) -> tuple[nn.Module, dict[str, Any]]:
    """A copy of ``model`` without the ``ratio`` least important output channels of its last
    conv (and everything coupled to them), and the record that replays the change on a fresh
    copy of the network (``replay_channel_pruning``): layer, removed channels, input size and
    the parameter count the group predicted to remove."""
    if not 0 < ratio < 1:
        raise ConfigError(f"channel pruning ratio must be in (0, 1), got {ratio}")
    last_convs = regular_convs(model)[::-1][:CANDIDATES]
    if not last_convs:
        raise NotApplicable(f"{type(model).__name__} has no conv layer to prune channels of")
    skipped = []
    for name, conv in last_convs:  # the last conv, unless pruning it breaks the network
        keep_count = max(1, round(conv.out_channels * (1 - ratio)))
        scores = channel_importance(model, criterion, name, input_size)
        removed = sorted(scores.argsort()[: conv.out_channels - keep_count].tolist())
        pruned = copy.deepcopy(model)
        graph, group = _group(pruned, name, removed, input_size)
        predicted = predicted_removed(graph, group)
        group.prune()
        problem = _forward_problem(pruned, input_size)
        if problem is None:
            coupled = sorted({graph._module2name[dep.target.module] for dep, _ in group
                              if dep.target.module in graph._module2name})
            return pruned, {"layer": name, "channels": removed, "input_size": input_size, "before": conv.out_channels,
                            "predicted_removed_params": predicted, "coupled_layers": coupled, "skipped": skipped}
        skipped.append(f"{name}: {problem}")
    raise NotApplicable(f"pruning channels breaks the forward pass ({'; '.join(skipped)})")


def _forward_problem(model: nn.Module, input_size: int) -> str | None:
    """Why the model no longer runs on an image of ``input_size`` (None: it does). Torch-Pruning
    cannot follow every coupling (e.g. the CIFAR ResNet's zero-padding shortcut)."""
    device = next(model.parameters()).device
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, input_size, input_size, device=device))
        return None
    except RuntimeError as exc:
        return _first_line(exc)
    finally:
        model.train(was_training)


def replay_channel_pruning(model: nn.Module, record: dict[str, Any]) -> None:
    """Give a fresh network the shape a ``prune_last_conv_channels`` record describes (the
    weights are loaded afterwards)."""
    _, group = _group(model, record["layer"], list(record["channels"]), record["input_size"])
    group.prune()


def predicted_removed(graph, group) -> int:
    """Parameters the group's pruning will remove, from its dependencies alone: each pruned
    output channel takes its slice of every parameter of the layer indexed by output (filter,
    bias, batch-norm weight and bias); each pruned input channel a column of the consumer's
    weight."""
    total = 0
    for dep, idxs in group:
        module = dep.target.module
        if not isinstance(module, nn.Module):
            continue
        params = [p for p in module.parameters(recurse=False) if p.dim() >= 1]
        if graph.is_out_channel_pruning_fn(dep.handler) or all(p.dim() == 1 for p in params):
            total += len(idxs) * sum(p[0].numel() for p in params)
        else:
            weight = getattr(module, "weight", None)
            if weight is not None and weight.dim() >= 2:
                total += len(idxs) * weight[:, 0].numel()
    return total


def count_macs(model: nn.Module, input_size: int) -> int:
    """Multiply-accumulates of one forward pass on one image: torch's FlopCounterMode counts
    2 FLOPs per multiply-accumulate of every conv and matmul."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def state_dict_bytes(model: nn.Module) -> int:
    """Size of the model's saved state dict, in bytes."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"
