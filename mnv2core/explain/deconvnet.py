"""DeconvNet reconstructions (Zeiler & Fergus, "Visualizing and Understanding Convolutional
Networks") and guided backpropagation: a layer's strongest activations projected back to
pixel space.

One backward pass from a single activation unit, with every ReLU's backward replaced by the
rule: DeconvNet passes ``relu(gradient)`` whatever the forward input was, guided backpropagation
``relu(gradient)`` where the forward input was positive as well. Autograd does the rest as the
paper does: max-pooling routes the signal through its recorded switches, a (strided)
convolution through its transposed filters; batch norm in eval mode is an affine map, residual
adds and depthwise convolutions have their own exact backward.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

RULES = ("deconvnet", "guided")
RECTIFIERS = (nn.ReLU, nn.ReLU6)  # the activations the rules are defined for
SUPPORT = 0.05  # a reconstruction's support: pixels above this share of its peak magnitude
EDGE = 0.25  # an edge pixel: Sobel magnitude above this share of the image's strongest


@dataclass
class Reconstruction:
    image: int  # index in the batch
    channel: int
    position: tuple[int, int]  # in the layer's map
    activation: float
    pixels: torch.Tensor  # (3, H, W): the projection, in input space
    box: tuple[int, int, int, int]  # (top, left, bottom, right) of its support


class _Rectifier(torch.autograd.Function):
    """``x.clamp(0, upper)`` whose backward is ``rule``'s: DeconvNet ``relu(gradient)``, guided
    backpropagation ``relu(gradient)`` where the rectifier passed its input (0 < x < upper)."""

    @staticmethod
    def forward(ctx, x, upper, rule):
        ctx.save_for_backward(x)
        ctx.upper, ctx.rule = upper, rule
        return x.clamp(0, upper)

    @staticmethod
    def backward(ctx, gradient):
        (x,) = ctx.saved_tensors
        if ctx.rule == "guided":
            passed = (x > 0) if ctx.upper is None else (x > 0) & (x < ctx.upper)
            gradient = gradient * passed
        return gradient.clamp(min=0), None, None


@contextlib.contextmanager
def backward_rule(model: nn.Module, rule: str) -> Iterator[int]:
    """Every ReLU (and ReLU6) module of ``model`` runs as a rectifier whose backward is
    ``rule``'s for the block; yields how many. The rule sits in the rectifier's own autograd
    node, so a projection that starts at a rectifier's output passes it too (a backward hook
    on the module would not see a gradient taken from the output a forward hook captured)."""
    if rule not in RULES:
        raise ValueError(f"rule {rule!r}; choose one of {RULES}")
    rectifiers = [m for m in model.modules() if isinstance(m, RECTIFIERS)]
    for module in rectifiers:
        upper = float(module.max_val) if isinstance(module, nn.ReLU6) else None
        module.forward = lambda x, upper=upper: _Rectifier.apply(x, upper, rule)
    try:
        yield len(rectifiers)
    finally:
        for module in rectifiers:
            del module.forward  # the class's forward again


def reconstruct(model: nn.Module, images: torch.Tensor, layer: str, count: int = 6,
                rule: str = "deconvnet") -> list[Reconstruction]:
    """The ``count`` strongest channels of ``layer`` over ``images`` (each at its strongest
    position and image), each projected back to pixel space by ``rule``. The model is left in
    eval mode, without gradients on its parameters."""
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    handle = modules[layer].register_forward_hook(lambda module, inputs, output: captured.update(maps=output))
    model.eval()
    try:
        with backward_rule(model, rule), torch.enable_grad():
            pixels = images.detach().clone().requires_grad_(True)
            model(pixels)
            maps = captured["maps"]
            found = []
            peaks = maps.detach().transpose(0, 1).flatten(1).max(1)  # per channel, over images and positions
            for channel in peaks.values.argsort(descending=True)[:count].tolist():
                index = int(peaks.indices[channel])
                image, rest = divmod(index, maps.shape[2] * maps.shape[3])
                y, x = divmod(rest, maps.shape[3])
                unit = torch.zeros_like(maps)
                unit[image, channel, y, x] = maps[image, channel, y, x].detach()
                (projected,) = torch.autograd.grad(maps, pixels, unit, retain_graph=True)
                found.append(Reconstruction(image, channel, (y, x), float(unit[image, channel, y, x]),
                                            projected[image].detach(), support_box(projected[image])))
    finally:
        handle.remove()
    return found


def support_box(pixels: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), bottom and right exclusive, of the pixels where the
    reconstruction's magnitude exceeds SUPPORT of its peak (the whole image if it is zero)."""
    magnitude = pixels.abs().sum(0)
    if magnitude.max() == 0:
        return 0, 0, magnitude.shape[0], magnitude.shape[1]
    rows, cols = (magnitude > SUPPORT * magnitude.max()).nonzero(as_tuple=True)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def edge_magnitude(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W) Sobel gradient magnitude of the images' grey level (the border an edge
    against the zero padding, as a convolution sees it)."""
    grey = images.mean(1, keepdim=True)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([sobel, sobel.T]).unsqueeze(1).to(images)
    gradients = F.conv2d(grey, kernels, padding=1)  # zero padding, as the networks' convolutions see the border
    return gradients.pow(2).sum(1).sqrt()


def edge_share(reconstruction: Reconstruction, images: torch.Tensor) -> float:
    """The share of the reconstruction's magnitude that lies on the input's edges (pixels whose
    Sobel magnitude is above EDGE of the image's strongest): 1 when all it shows is edges."""
    magnitude = reconstruction.pixels.abs().sum(0)
    edges = edge_magnitude(images[reconstruction.image:reconstruction.image + 1])[0].to(magnitude)
    total = magnitude.sum()
    if total == 0 or edges.max() == 0:
        return 0.0
    return float((magnitude * (edges > EDGE * edges.max())).sum() / total)


def flat_share(model: nn.Module) -> float | None:
    """Of the model's first convolution (with a window wider than one pixel), the share of each
    filter's energy in its mean over the window, averaged over its filters: 0 for edge detectors
    (zero-sum filters), 1 for filters that see only flat brightness or colour, about 1/(k*k)
    for white noise such as a random init. None without such a convolution."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first.weight.shape[2] * first.weight.shape[3] == 1:
        return None
    weights = first.weight.detach().float().flatten(2)  # (out, in, window)
    flat = weights.mean(2, keepdim=True).pow(2).sum((1, 2)) * weights.shape[2]
    return float((flat / weights.pow(2).sum((1, 2)).clamp_min(1e-12)).mean())


def plot_reconstructions(images: torch.Tensor, found: dict[str, list[Reconstruction]], path, title: str):
    """Per layer, a row of reconstructions, each with the image patch it came from beneath it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(items) for items in found.values())
    rows = 2 * len(found)
    figure, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.5 * rows + 0.4), squeeze=False)
    for block, (layer, items) in enumerate(found.items()):
        for column in range(columns):
            for row in (2 * block, 2 * block + 1):
                axes[row, column].axis("off")
            if column >= len(items):
                continue
            item = items[column]
            top, left, bottom, right = item.box
            shown = item.pixels[:, top:bottom, left:right]
            scale = shown.abs().max().clamp_min(1e-12)
            axes[2 * block, column].imshow((shown / (2 * scale) + 0.5).permute(1, 2, 0).cpu().numpy())
            axes[2 * block, column].set_title(f"{layer} ch {item.channel}", fontsize=6)
            patch = images[item.image, :, top:bottom, left:right]
            axes[2 * block + 1, column].imshow(patch.permute(1, 2, 0).cpu().numpy())
    figure.suptitle(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(figure)
    return path
