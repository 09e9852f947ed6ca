"""Networks no library ships, the harness's "builtin" source: VGG16 for 32 px inputs, the
small digit classifiers and the CIFAR ResNets of He et al. Each declares its input
normalisation (``Builtin.preprocessing``) as a library's weights would."""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

DIGIT_SIZE = 28


class FeaturesClassifier(nn.Module):
    """``classifier(flatten(features(x)))``."""

    def __init__(self, features: nn.Module, classifier: nn.Sequential):
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def vgg16_cifar(num_classes: int) -> FeaturesClassifier:
    """VGG16 (configuration D, with batch norm) for 32 px images: torchvision's 13 conv layers,
    initialised as torchvision initialises them, global average pooling, and a 512-512-classes
    classifier with dropout. Built from torchvision's layer list, not its model, whose ImageNet
    classifier (120 M parameters) would be initialised only to be thrown away."""
    from torchvision.models import vgg  # imported when used: torchvision takes 1.5 s to import
    features = vgg.make_layers(vgg.cfgs["D"], batch_norm=True)
    for conv in (m for m in features if isinstance(m, nn.Conv2d)):
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
    features.append(nn.AdaptiveAvgPool2d(1))
    return FeaturesClassifier(features, vgg_classifier(512, 512, num_classes))


def vgg_classifier(in_features: int, hidden: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(hidden, num_classes))


def _conv(cin: int, cout: int, kernel: int = 3, padding: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=padding), nn.ReLU(inplace=True)]


def lightcnn(num_classes: int) -> FeaturesClassifier:
    """conv(1->8) pool conv(8->16) pool conv(16->32) global-avg-pool linear(32->classes):
    6,218 parameters for 10 classes."""
    features = nn.Sequential(*_conv(1, 8), nn.MaxPool2d(2), *_conv(8, 16), nn.MaxPool2d(2),
                             *_conv(16, 32), nn.AdaptiveAvgPool2d(1))
    return FeaturesClassifier(features, nn.Sequential(nn.Linear(32, num_classes)))


def mlp(num_classes: int) -> FeaturesClassifier:
    """784-512-256-classes multilayer perceptron on 28 x 28 pixels."""
    pixels = DIGIT_SIZE * DIGIT_SIZE
    return FeaturesClassifier(nn.Identity(), nn.Sequential(
        nn.Linear(pixels, 512), nn.ReLU(inplace=True), nn.Linear(512, 256), nn.ReLU(inplace=True),
        nn.Linear(256, num_classes)))


def lenet(num_classes: int) -> FeaturesClassifier:
    """LeNet-style CNN with large fully connected layers (Caffe's LeNet: 20 and 50 5x5
    filters, an 800-500 hidden layer): 431,080 parameters for 10 classes at 28 px."""
    features = nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2))
    return FeaturesClassifier(features, nn.Sequential(
        nn.Linear(50 * 4 * 4, 500), nn.ReLU(inplace=True), nn.Linear(500, num_classes)))


def ultralight(num_classes: int) -> FeaturesClassifier:
    """One conv with 4 filters, 2x2 average pooling and a 16-classes linear layer: 210
    parameters for 10 classes."""
    features = nn.Sequential(*_conv(1, 4), nn.AdaptiveAvgPool2d(2))
    return FeaturesClassifier(features, nn.Sequential(nn.Linear(16, num_classes)))


def mediumlight(num_classes: int) -> FeaturesClassifier:
    """Two convs (8, 16 filters), 2x2 average pooling, a 64-24-classes classifier: 3,058
    parameters for 10 classes."""
    features = nn.Sequential(*_conv(1, 8), nn.MaxPool2d(2), *_conv(8, 16), nn.AdaptiveAvgPool2d(2))
    return FeaturesClassifier(features, nn.Sequential(
        nn.Linear(64, 24), nn.ReLU(inplace=True), nn.Linear(24, num_classes)))


class ShortcutA(nn.Module):
    """He et al.'s option A shortcut where the width doubles: the input subsampled by 2 in
    both spatial dimensions and zero-padded with ``planes // 4`` channels on each side (no
    parameters)."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = ShortcutA(planes) if stride != 1 or in_planes != planes else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. 2016, section 4.2 (6n+2 layers): a 3x3 conv of 16
    filters, three stages of n BasicBlocks with 16, 32 and 64 filters (the 2nd and 3rd start
    with stride 2 and an option A shortcut), global average pooling and a Linear. State-dict
    keys follow akamaster/pytorch_resnet_cifar10 (conv1, bn1, layer1..3, linear)."""

    def __init__(self, blocks: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        widths, layers, in_planes = (16, 32, 64), [], 16
        for stage, planes in enumerate(widths):
            strides = [1 if stage == 0 else 2] + [1] * (blocks - 1)
            stage_blocks = []
            for stride in strides:
                stage_blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            layers.append(nn.Sequential(*stage_blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(self.pool(x), 1))


@dataclass(frozen=True)
class Builtin:
    make: Callable[[int], nn.Module]  # num_classes -> network
    preprocessing: tuple  # (mean, std, grey) of its inputs


IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False)
MNIST_STATS = ((0.1307,), (0.3081,), True)  # the grey level of a digit image
BUILTIN_NETWORKS = {
    "vgg16": Builtin(vgg16_cifar, IMAGENET_STATS),
    "lightcnn": Builtin(lightcnn, MNIST_STATS),
    "mlp": Builtin(mlp, MNIST_STATS),
    "lenet": Builtin(lenet, MNIST_STATS),
    "ultralight": Builtin(ultralight, MNIST_STATS),
    "mediumlight": Builtin(mediumlight, MNIST_STATS),
    # trained with ImageNet mean/std (the shared CIFAR-10 weights' recipe)
    "cifar_resnet20": Builtin(lambda classes: CifarResNet(3, classes), IMAGENET_STATS),
    "cifar_resnet56": Builtin(lambda classes: CifarResNet(9, classes), IMAGENET_STATS),
}


def conv_outputs(features: nn.Sequential) -> list[int]:
    """Index in ``features`` of the activation that ends each conv layer (the ReLU after
    the conv and its batch norm): the layers whose outputs the separation index scores."""
    convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
    return [next(j for j in range(i, len(features)) if isinstance(features[j], nn.ReLU)) for i in convs]


def cut_vgg(net: FeaturesClassifier, conv_layers: int, channels: int, hidden: int,
            num_classes: int) -> FeaturesClassifier:
    """The shape of a VGG compressed by the separation index: the first ``conv_layers`` conv
    layers (the last one with ``channels`` filters), global average pooling and a
    ``channels``-``hidden``-classes classifier. Weights are fresh: copy them in afterwards."""
    end = conv_outputs(net.features)[conv_layers - 1]
    layers = list(net.features[:end + 1])
    conv_at = max(i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d))
    layers[conv_at] = nn.Conv2d(layers[conv_at].in_channels, channels, 3, padding=1)
    layers[conv_at + 1] = nn.BatchNorm2d(channels)
    features = nn.Sequential(*[copy.deepcopy(m) if i < conv_at else m for i, m in enumerate(layers)],
                             nn.AdaptiveAvgPool2d(1))
    classifier = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
                               nn.Linear(hidden, num_classes))
    return FeaturesClassifier(features, classifier)


def compress_vgg(net: FeaturesClassifier, conv_layers: int, keep: list[int], hidden: int,
                 num_classes: int) -> FeaturesClassifier:
    """``cut_vgg`` with the trained weights of the kept layers; the last kept conv keeps only
    the filters ``keep`` (with their batch-norm entries). The classifier is new."""
    small = cut_vgg(net, conv_layers, len(keep), hidden, num_classes)
    conv_at = max(i for i, m in enumerate(small.features) if isinstance(m, nn.Conv2d))
    index = torch.tensor(keep)
    with torch.no_grad():
        for name, value in net.features[conv_at].state_dict().items():
            small.features[conv_at].state_dict()[name].copy_(value[index])
        for name, value in net.features[conv_at + 1].state_dict().items():
            target = small.features[conv_at + 1].state_dict()[name]
            target.copy_(value if name == "num_batches_tracked" else value[index])
    return small.to(next(net.parameters()).device)
