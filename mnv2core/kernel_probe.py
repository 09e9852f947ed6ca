"""What this CPU's math kernels compute, bit for bit: a digest of each op a grid trains with
(forward and both gradients, on fixed inputs, one thread). Two runs whose digests match ran
the same arithmetic for that op; the gate compares a run's probe with its baseline's and
names the ops that differ, which is where training on two CPUs starts to drift apart."""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

CHANNELS_LAST = torch.channels_last


def _conv(groups: int = 1, stride: int = 1, padding: int = 0) -> Callable:
    return lambda x, w: F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def _batch_norm(x, w):
    return F.batch_norm(x, None, None, w, torch.zeros_like(w), training=True)


# name -> (op, input shape, weight shape, channels_last): MobileNetV2's layers at 32 and 96 px,
# VGG's and the digit CNNs' NCHW 3x3 convs, a classifier (MKL's GEMM), batch norm in training
OPS: dict[str, tuple[Callable, tuple, tuple, bool]] = {
    "linear": (F.linear, (64, 1280), (10, 1280), False),
    "stem_conv3x3_s2": (_conv(stride=2, padding=1), (32, 3, 32, 32), (32, 3, 3, 3), True),
    "pointwise_32px": (_conv(), (64, 32, 16, 16), (96, 32, 1, 1), True),
    "pointwise_96px": (_conv(), (8, 32, 48, 48), (96, 32, 1, 1), True),
    "depthwise_32px": (_conv(groups=96, padding=1), (64, 96, 16, 16), (96, 1, 3, 3), True),
    "depthwise_96px": (_conv(groups=96, padding=1), (8, 96, 48, 48), (96, 1, 3, 3), True),
    "conv3x3_nchw": (_conv(padding=1), (32, 64, 16, 16), (64, 64, 3, 3), False),
    "batch_norm": (_batch_norm, (64, 96, 8, 8), (96,), True),
}


@functools.cache
def probe() -> dict[str, str]:
    """op -> a 16-hex digest of its output, input gradient and weight gradient."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: _digest(*spec) for name, spec in OPS.items()}
    finally:
        torch.set_num_threads(threads)


def _digest(op: Callable, input_shape: tuple, weight_shape: tuple, channels_last: bool) -> str:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(input_shape, generator=generator)
    x = (x.to(memory_format=CHANNELS_LAST) if channels_last else x).requires_grad_(True)
    w = torch.randn(weight_shape, generator=generator).requires_grad_(True)
    out = op(x, w)
    out.backward(torch.randn(out.shape, generator=generator))
    digest = hashlib.sha256()
    for tensor in (out, x.grad, w.grad):
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
