"""Compressed models change shape; their payloads carry an ``arch`` that rebuilds the shape
before the weights load."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..models import ImageClassifier, build_model
from ..networks import cut_vgg
from .channels import resize_last_conv
from .lowrank import LowRankLinear


def restore_model(name: str, num_classes: int, state_dict: dict, arch: dict[str, Any] | None = None) -> ImageClassifier:
    model = build_model(name, num_classes)
    apply_architecture(model, arch or {})
    model.load_state_dict(state_dict)
    return model


def apply_architecture(model: ImageClassifier, arch: dict[str, Any]) -> None:
    unknown = set(arch) - {"last_channels", "head_rank", "vgg_cut"}
    if unknown:
        raise ConfigError(f"unknown architecture change(s) {sorted(unknown)} in a cached payload")
    if "last_channels" in arch:
        resize_last_conv(model, arch["last_channels"])
    if "head_rank" in arch:
        head = model.head
        model.set_head(LowRankLinear(head.in_features, head.out_features, arch["head_rank"]))
    if "vgg_cut" in arch:
        cut = arch["vgg_cut"]
        model.net = cut_vgg(model.net, cut["conv_layers"], cut["channels"], cut["hidden"], model.head.out_features)
