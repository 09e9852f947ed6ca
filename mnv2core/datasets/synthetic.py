"""A learnable synthetic 10-class image dataset, generated deterministically from a seed.

Each image shows one object on a smooth, low-saturation background. The class fixes the
object's hue (10 hues) and shape (disk, square, ring, cross); position, size, brightness,
background and pixel noise vary. The evidence sits inside the object, so models can
learn it in a few hundred steps and saliency maps have a known right answer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .tensors import ImageSet

NUM_CLASSES = 10
HUE_NAMES = ("red", "orange", "yellow", "lime", "green", "teal", "cyan", "blue", "violet", "magenta")
SHAPE_NAMES = ("disk", "square", "ring", "cross")
CLASS_NAMES = tuple(f"{HUE_NAMES[c]}-{SHAPE_NAMES[c % 4]}" for c in range(NUM_CLASSES))
GENERATOR_VERSION = 1


def hue_palette(count: int, offset: float = 0.0) -> torch.Tensor:
    """``count`` fully saturated RGB colours with evenly spaced hues, shape (count, 3)."""
    hues = (torch.arange(count) + offset) / count
    k = (torch.tensor([5.0, 3.0, 1.0])[None] + hues[:, None] * 6) % 6
    return 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def generate(count: int, size: int, seed: int, palette_offset: float = 0.0) -> ImageSet:
    """``count`` images of ``size`` px. ``palette_offset`` shifts the hues (in steps of the
    palette) to make a related but different task, used for synthetic pretraining."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randperm(count, generator=g) % NUM_CLASSES
    background = _background(count, size, g)
    mask = _object_masks(labels, size, g)
    brightness = 0.7 + 0.3 * torch.rand(count, 1, 1, 1, generator=g)
    colour = hue_palette(NUM_CLASSES, palette_offset)[labels][:, :, None, None] * brightness
    images = background * (1 - mask) + colour * mask
    images = images + torch.randn(images.shape, generator=g) * 0.06
    return ImageSet((images.clamp(0, 1) * 255).round().to(torch.uint8), labels)


def _background(count: int, size: int, g: torch.Generator) -> torch.Tensor:
    coarse = torch.rand(count, 1, 4, 4, generator=g) * 0.5 + 0.25
    tint = (torch.rand(count, 3, 1, 1, generator=g) - 0.5) * 0.2
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) + tint


def _object_masks(labels: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    count = labels.shape[0]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    radius = torch.rand(count, generator=g) * 0.25 + 0.3
    centre_y = (torch.rand(count, generator=g) * 2 - 1) * (1 - radius)
    centre_x = (torch.rand(count, generator=g) * 2 - 1) * (1 - radius)
    dy = (yy - centre_y[:, None, None]) / radius[:, None, None]
    dx = (xx - centre_x[:, None, None]) / radius[:, None, None]
    r = torch.sqrt(dy ** 2 + dx ** 2)
    shapes = torch.stack([
        r <= 1,
        (dy.abs() <= 0.8) & (dx.abs() <= 0.8),
        (r <= 1) & (r >= 0.55),
        ((dy.abs() <= 0.3) | (dx.abs() <= 0.3)) & (r <= 1.1),
    ], 1)
    index = (labels % len(SHAPE_NAMES)).view(count, 1, 1, 1).expand(-1, 1, size, size)
    return shapes.gather(1, index).float()
