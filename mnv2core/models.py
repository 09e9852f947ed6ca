"""Model construction. Every model takes raw [0, 1] RGB pixels: ImageNet normalisation is
its first layer, so attacks, ONNX export and int8 all see the same input."""
from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tv_models

from .errors import ConfigError

MODEL_NAMES = ("mobilenet_v2", "resnet50")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageClassifier(nn.Module):
    """``normalize`` then a torchvision network ``net``."""

    def __init__(self, name: str, net: nn.Module):
        super().__init__()
        self.name = name
        self.normalize = Normalize()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    @property
    def head(self) -> nn.Linear:
        return self.net.classifier[-1] if self.name == "mobilenet_v2" else self.net.fc

    def set_head(self, head: nn.Module) -> None:
        if self.name == "mobilenet_v2":
            self.net.classifier[-1] = head
        else:
            self.net.fc = head

    def feature_parameters(self) -> list[nn.Parameter]:
        head_ids = {id(p) for p in self.head.parameters()}
        return [p for p in self.net.parameters() if id(p) not in head_ids]

    def feature_modules(self) -> list[nn.Module]:
        """Modules outside the classifier head (put in eval mode when frozen)."""
        if self.name == "mobilenet_v2":
            return [self.net.features]
        return [m for n, m in self.net.named_children() if n != "fc"]


def build_network(name: str, num_classes: int) -> nn.Module:
    """A bare torchvision network with random init (from the current torch RNG)."""
    check_model_name(name)
    return getattr(tv_models, name)(weights=None, num_classes=num_classes)


def build_model(name: str, num_classes: int, state_dict: dict | None = None) -> ImageClassifier:
    """A classifier; ``state_dict`` (of an ImageClassifier) restores trained weights."""
    model = ImageClassifier(name, build_network(name, num_classes))
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


def from_pretrained(name: str, net_state: dict, num_classes: int) -> ImageClassifier:
    """A classifier whose network starts from ``net_state`` (any head size) with a fresh
    head of ``num_classes`` outputs."""
    head_key = "classifier.1.weight" if name == "mobilenet_v2" else "fc.weight"
    if head_key not in net_state:
        raise ConfigError(f"weights for {name} lack {head_key!r}; are they torchvision {name} weights?")
    model = ImageClassifier(name, build_network(name, net_state[head_key].shape[0]))
    model.net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in net_state.items()})
    model.set_head(nn.Linear(model.head.in_features, num_classes))
    return model


def check_model_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise ConfigError(f"unknown model {name!r}; known: {list(MODEL_NAMES)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
