"""A learnable synthetic, MNIST-like 10-class digit dataset: the offline stand-in for MNIST.

Each image shows one light digit on a black background, grayscale stored as 3 identical
channels. Digits come from seven-segment-style stroke templates (with a diagonal for 7 and
a stem and flag for 1), drawn as anti-aliased thick lines. Stroke width, size, aspect,
position, rotation, shear, stroke end points, brightness and pixel noise vary per image,
so the task is learnable but not trivial. Deterministic from a seed.
"""
from __future__ import annotations

import math

import torch

from .tensors import ImageSet

NUM_CLASSES = 10
CLASS_NAMES = tuple(str(d) for d in range(NUM_CLASSES))
GENERATOR_VERSION = 1
CHUNK = 1024

# Template strokes in a unit box centred on 0 (x right, y down), as (start, end) points.
_W, _H = 0.3, 0.5
SEGMENTS = torch.tensor([
    [[-_W, -_H], [_W, -_H]],    # 0 top
    [[_W, -_H], [_W, 0.0]],     # 1 upper right
    [[_W, 0.0], [_W, _H]],      # 2 lower right
    [[-_W, _H], [_W, _H]],      # 3 bottom
    [[-_W, 0.0], [-_W, _H]],    # 4 lower left
    [[-_W, -_H], [-_W, 0.0]],   # 5 upper left
    [[-_W, 0.0], [_W, 0.0]],    # 6 middle
    [[_W, -_H], [-0.1, _H]],    # 7 diagonal of the 7
    [[0.05, -_H], [0.05, _H]],  # 8 stem of the 1
    [[0.05, -_H], [-0.2, -0.25]],  # 9 flag of the 1
])
DIGIT_STROKES = (
    (0, 1, 2, 3, 4, 5), (8, 9), (0, 1, 6, 4, 3), (0, 1, 6, 2, 3), (5, 6, 1, 2),
    (0, 5, 6, 2, 3), (0, 5, 6, 4, 3, 2), (0, 7), (0, 1, 2, 3, 4, 5, 6), (0, 1, 2, 3, 5, 6),
)
ACTIVE = torch.tensor([[s in strokes for s in range(len(SEGMENTS))] for strokes in DIGIT_STROKES])


def generate_digits(count: int, size: int = 28, seed: int = 0) -> ImageSet:
    """``count`` digit images of ``size`` x ``size`` px with balanced labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randperm(count, generator=g) % NUM_CLASSES
    endpoints = _placed_strokes(count, size, g)
    half_width = size * (0.03 + 0.035 * torch.rand(count, generator=g))
    brightness = 0.7 + 0.3 * torch.rand(count, generator=g)
    chunks = []
    for start in range(0, count, CHUNK):
        part = slice(start, start + CHUNK)
        ink = _render(endpoints[part], ACTIVE[labels[part]], half_width[part], size)
        ink = ink * brightness[part, None, None] + 0.05 * torch.randn(ink.shape, generator=g)
        chunks.append((ink.clamp(0, 1) * 255).round().to(torch.uint8))
    images = torch.cat(chunks) if chunks else torch.zeros(0, size, size, dtype=torch.uint8)
    return ImageSet(images[:, None].expand(-1, 3, -1, -1).contiguous(), labels)


def _placed_strokes(count: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Template end points, jittered and mapped by a random affine map to pixel coordinates,
    shape (count, segments, 2 points, 2 coords)."""
    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, generator=g)

    points = SEGMENTS + 0.04 * torch.randn((count, *SEGMENTS.shape), generator=g)
    scale = size * uniform(0.55, 0.75)
    aspect, shear = uniform(0.8, 1.25), uniform(-0.25, 0.25)
    angle = uniform(-12, 12) * math.pi / 180
    cos, sin = torch.cos(angle), torch.sin(angle)
    # linear map = scale * rotation @ shear @ diag(aspect, 1), as rows (x', y')
    a, b = cos * aspect, cos * shear - sin
    c, d = sin * aspect, sin * shear + cos
    matrix = scale[:, None, None] * torch.stack([torch.stack([a, b], -1), torch.stack([c, d], -1)], -2)
    centre = (size - 1) / 2 + size * 0.06 * (2 * torch.rand(count, 2, generator=g) - 1)
    return torch.einsum("nij,nspj->nspi", matrix, points) + centre[:, None, None, :]


def _render(endpoints: torch.Tensor, active: torch.Tensor, half_width: torch.Tensor,
            size: int) -> torch.Tensor:
    """Ink in [0, 1], shape (n, size, size): 1 on the active strokes, falling from 1 to 0
    over 1.5 px centred ``half_width`` px from the stroke's axis (anti-aliasing)."""
    coords = torch.arange(size, dtype=torch.float32)
    px, py = coords.view(1, 1, size), coords.view(1, size, 1)
    squared = torch.full((endpoints.shape[0], size, size), math.inf)
    for s in range(endpoints.shape[1]):
        (ax, ay), (bx, by) = (endpoints[:, s, k].unbind(-1) for k in (0, 1))
        to_segment = _squared_segment_distance(px, py, ax, ay, bx, by)
        to_segment = torch.where(active[:, s, None, None], to_segment, math.inf)
        squared = torch.minimum(squared, to_segment)
    return ((half_width[:, None, None] - squared.sqrt()) / 1.5 + 0.5).clamp(0, 1)


def _squared_segment_distance(px, py, ax, ay, bx, by) -> torch.Tensor:
    """Squared distance from pixel centres (px, py) to the segments A-B, one per image."""
    ax, ay, bx, by = (v.view(-1, 1, 1) for v in (ax, ay, bx, by))
    dx, dy = bx - ax, by - ay
    t = (((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy).clamp_min(1e-6)).clamp(0, 1)
    return (px - ax - t * dx) ** 2 + (py - ay - t * dy) ** 2
