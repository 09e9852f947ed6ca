"""Structured pruning: physically remove output channels of MobileNetV2's last conv
(``features[18]``, 1280 channels) and the classifier inputs they fed."""
from __future__ import annotations

import copy
import io

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigError
from ..models import ImageClassifier

CRITERIA = ("l1", "l2", "bn_gamma")


def channel_importance(model: ImageClassifier, criterion: str = "l1") -> torch.Tensor:
    conv, bn = _last_conv(model)
    weight = conv.weight.detach().flatten(1)
    if criterion == "l1":
        return weight.abs().sum(1)
    if criterion == "l2":
        return weight.pow(2).sum(1).sqrt()
    if criterion == "bn_gamma":
        return bn.weight.detach().abs()
    raise ConfigError(f"unknown channel importance criterion {criterion!r}; choose from {list(CRITERIA)}")


def prune_last_conv_channels(model: ImageClassifier, ratio: float, criterion: str = "l1") -> ImageClassifier:
    """A copy of ``model`` without the ``ratio`` least important output channels of the last
    conv: the conv, its batch norm and the classifier's input all shrink."""
    if not 0 < ratio < 1:
        raise ConfigError(f"channel pruning ratio must be in (0, 1), got {ratio}")
    conv, _ = _last_conv(model)
    keep_count = round(conv.out_channels * (1 - ratio))
    keep = channel_importance(model, criterion).topk(keep_count).indices.sort().values
    pruned = copy.deepcopy(model)
    resize_last_conv(pruned, keep_count)
    new_conv, new_bn = _last_conv(pruned)
    _, old_bn = _last_conv(model)
    with torch.no_grad():
        new_conv.weight.copy_(conv.weight[keep])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new_bn, name).copy_(getattr(old_bn, name)[keep])
        new_bn.num_batches_tracked.copy_(old_bn.num_batches_tracked)
        pruned.head.weight.copy_(model.head.weight[:, keep])
        pruned.head.bias.copy_(model.head.bias)
    return pruned


def resize_last_conv(model: ImageClassifier, channels: int) -> None:
    """Give the last conv, its batch norm and the classifier ``channels`` channels (fresh
    tensors: the caller fills them, e.g. from a state dict)."""
    conv, bn = _last_conv(model)
    block = model.net.features[18]
    device = conv.weight.device
    block[0] = nn.Conv2d(conv.in_channels, channels, kernel_size=1, bias=False).to(device)
    block[1] = nn.BatchNorm2d(channels, eps=bn.eps, momentum=bn.momentum).to(device)
    block.out_channels = channels
    model.net.last_channel = channels
    model.set_head(nn.Linear(channels, model.head.out_features).to(device))


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


def _last_conv(model: ImageClassifier) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    if model.name != "mobilenet_v2":
        raise ConfigError(f"structured pruning of the last conv is defined for mobilenet_v2, not {model.name}")
    block = model.net.features[18]
    return block[0], block[1]
