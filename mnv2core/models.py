"""Model construction. Every model takes raw [0, 1] RGB pixels: normalisation is its first
layer (ImageNet statistics; the digit models average the channels to grey and use MNIST's),
so attacks, ONNX export and int8 all see the same input."""
from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tv_models

from .errors import ConfigError
from .networks import CUSTOM_NETWORKS, DIGIT_NETWORKS

TORCHVISION_NETWORKS = ("mobilenet_v2", "resnet50", "resnet18")
MODEL_NAMES = TORCHVISION_NETWORKS + tuple(CUSTOM_NETWORKS)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# the key of each pretrainable network's classifier weight in its torchvision state dict
HEAD_KEYS = {"mobilenet_v2": "classifier.1.weight", "resnet50": "fc.weight", "resnet18": "fc.weight"}


class Normalize(nn.Module):
    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class GreyNormalize(Normalize):
    """Grey level (mean of the three identical channels of a digit image), normalised."""

    def __init__(self):
        super().__init__((MNIST_MEAN,), (MNIST_STD,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.mean(1, keepdim=True))


class ImageClassifier(nn.Module):
    """``normalize`` then a torchvision network ``net``."""

    def __init__(self, name: str, net: nn.Module):
        super().__init__()
        self.name = name
        self.normalize = GreyNormalize() if name in DIGIT_NETWORKS else Normalize()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    @property
    def head(self) -> nn.Linear:
        """The last Linear layer (ResNet's ``fc``, else the classifier's last)."""
        return self.net.fc if self._is_resnet else self.net.classifier[-1]

    @property
    def classifier(self) -> nn.Module:
        """Everything after the pooled backbone features: ``forward(x) == classifier(embed(x))``."""
        return self.net.fc if self._is_resnet else self.net.classifier

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled, flattened features of raw pixels (the classifier's input)."""
        net, x = self.net, self.normalize(x)
        if self._is_resnet:
            x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            return torch.flatten(net.avgpool(net.layer4(net.layer3(net.layer2(net.layer1(x))))), 1)
        if self.name == "mobilenet_v2":
            return torch.flatten(nn.functional.adaptive_avg_pool2d(net.features(x), 1), 1)
        return net.features(x).flatten(1)  # FeaturesClassifier

    def set_head(self, head: nn.Module) -> None:
        if self._is_resnet:
            self.net.fc = head
        else:
            self.net.classifier[-1] = head

    @property
    def _is_resnet(self) -> bool:
        return self.name.startswith("resnet")

    def feature_parameters(self) -> list[nn.Parameter]:
        head_ids = {id(p) for p in self.head.parameters()}
        return [p for p in self.net.parameters() if id(p) not in head_ids]

    def feature_modules(self) -> list[nn.Module]:
        """Modules outside the classifier head (put in eval mode when frozen)."""
        if self._is_resnet:
            return [m for n, m in self.net.named_children() if n != "fc"]
        return [self.net.features]


def build_network(name: str, num_classes: int) -> nn.Module:
    """A bare network with random init (from the current torch RNG)."""
    check_model_name(name)
    if name in CUSTOM_NETWORKS:
        return CUSTOM_NETWORKS[name](num_classes)
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
    if name not in HEAD_KEYS:
        raise ConfigError(f"{name} has no pretrained weights in this harness; use weights {name} = \"none\"")
    head_key = HEAD_KEYS[name]
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
