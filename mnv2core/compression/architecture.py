"""Compressed models change shape; their payloads carry an ``arch`` that rebuilds the shape
before the weights load."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..models import ImageClassifier, ModelSpec, build_model
from ..networks import cut_vgg
from .channels import replay_channel_pruning
from .lowrank import LowRankLinear


def restore_model(model: str | dict, num_classes: int, state_dict: dict,
                  arch: dict[str, Any] | None = None) -> ImageClassifier:
    """A cached model: its network (``model``: a payload's spec identity, or a builtin or
    torchvision name) rebuilt, reshaped by ``arch``, then its weights loaded."""
    spec = ModelSpec(**model) if isinstance(model, dict) else model
    restored = build_model(spec, num_classes)
    apply_architecture(restored, arch or {})
    restored.load_state_dict(state_dict)
    return restored


def apply_architecture(model: ImageClassifier, arch: dict[str, Any]) -> None:
    unknown = set(arch) - {"pruned_channels", "head_rank", "vgg_cut"}
    if unknown:
        raise ConfigError(f"unknown architecture change(s) {sorted(unknown)} in a cached payload")
    if "pruned_channels" in arch:
        replay_channel_pruning(model, arch["pruned_channels"])
    if "head_rank" in arch:
        head = model.head
        model.set_head(LowRankLinear(head.in_features, head.out_features, arch["head_rank"]))
    if "vgg_cut" in arch:
        cut = arch["vgg_cut"]
        model.net = cut_vgg(model.net, cut["conv_layers"], cut["channels"], cut["hidden"], model.head.out_features)
