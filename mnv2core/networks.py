"""Networks of the companion studies that torchvision does not ship: VGG16 for 32 px inputs
and the small digit classifiers. Each has ``features`` and ``classifier`` (ending in the
Linear head), like torchvision's MobileNetV2."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torchvision import models as tv_models

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
    global average pooling, and a 512-512-classes classifier with dropout."""
    features = tv_models.vgg16_bn(weights=None).features
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


CUSTOM_NETWORKS = {"vgg16": vgg16_cifar, "lightcnn": lightcnn, "mlp": mlp, "lenet": lenet,
                   "ultralight": ultralight, "mediumlight": mediumlight}
DIGIT_NETWORKS = ("lightcnn", "mlp", "lenet", "ultralight", "mediumlight")


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
