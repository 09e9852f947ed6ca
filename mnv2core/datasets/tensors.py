"""Decoded images held as one uint8 tensor, batching and tensor augmentation."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

RESIZE_CHUNK = 2048


@dataclass(frozen=True)
class ImageSet:
    """``images``: uint8 (N, 3, H, W); ``labels``: int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have one entry per image")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def size(self) -> int:
        return self.images.shape[-1]

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device))

    def resized(self, size: int) -> ImageSet:
        """Bilinear (antialiased) resize to ``size`` x ``size``, still uint8."""
        if self.images.shape[-2:] == (size, size):
            return self
        chunks = [_resize_uint8(chunk, size) for chunk in self.images.split(RESIZE_CHUNK)]
        return ImageSet(torch.cat(chunks), self.labels)

    def head(self, count: int) -> ImageSet:
        return ImageSet(self.images[:count], self.labels[:count])

    def spread(self, count: int) -> ImageSet:
        """``count`` images taken in turn from every class (each class's first image, then each
        one's second, ...), in the set's order within a class: a sample spanning the classes
        even of a class-sorted folder."""
        labels = self.labels.cpu()
        rank = torch.zeros(len(self), dtype=torch.long)
        for label in labels.unique():
            members = (labels == label).nonzero().flatten()
            rank[members] = torch.arange(len(members))
        order = sorted(range(len(self)), key=lambda i: (int(rank[i]), int(labels[i])))[:count]
        index = torch.tensor(order, dtype=torch.long, device=self.labels.device)
        return ImageSet(self.images[index], self.labels[index])

    def cycled(self, count: int) -> ImageSet:
        """``count`` images: the set's first ones, repeated from the start when it holds fewer."""
        index = torch.arange(count, device=self.labels.device) % len(self)
        return ImageSet(self.images[index], self.labels[index])

    def subset(self, count: int | None, seed: int) -> ImageSet:
        """``count`` images drawn at random (fixed by ``seed``); all of them if None."""
        if count is None or count >= len(self):
            return self
        index = random_draw(len(self), count, seed).to(self.images.device)
        return ImageSet(self.images[index], self.labels[index])

    def stratified_split(self, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
        """(rest, held out): ``fraction`` of every class, drawn at random (fixed by ``seed``),
        is held out; both keep the original order."""
        held = held_out(self.labels, fraction, seed)
        return self._select(~held), self._select(held)

    def _select(self, mask: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[mask], self.labels[mask])

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(self.images.cpu().contiguous().numpy().tobytes())
        digest.update(self.labels.cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear",
                            align_corners=False, antialias=True)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float in [0, 1] (models normalise internally)."""
    return images.float().div_(255.0)


def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Per-image random crop (zero padding) and horizontal flip, all on the images' device."""
    n, _, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    offset_y = torch.randint(0, 2 * padding + 1, (n, 1, 1, 1), device=device, generator=generator)
    offset_x = torch.randint(0, 2 * padding + 1, (n, 1, 1, 1), device=device, generator=generator)
    rows = offset_y + torch.arange(h, device=device).view(1, 1, h, 1)
    cols = offset_x + torch.arange(w, device=device).view(1, 1, 1, w)
    flip = torch.rand((n, 1, 1, 1), device=device, generator=generator) < 0.5
    cols = torch.where(flip, offset_x + (w - 1) - torch.arange(w, device=device).view(1, 1, 1, w), cols)
    batch = torch.arange(n, device=device).view(n, 1, 1, 1)
    channel = torch.arange(images.shape[1], device=device).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


@dataclass(frozen=True)
class FeatureSet:
    """Precomputed inputs of a model's trainable head: float ``features`` (N, ...) of the
    frozen backbone, ``labels`` int64 (N,). Batches like an ImageSet (no augmentation)."""

    features: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if not self.features.is_floating_point() or self.labels.shape != (self.features.shape[0],):
            raise ValueError("features must be floating point with one label per row")

    def __len__(self) -> int:
        return self.features.shape[0]

    def head(self, count: int) -> FeatureSet:
        return FeatureSet(self.features[:count], self.labels[:count])

    def subset(self, count: int | None, seed: int) -> FeatureSet:
        """The rows ``ImageSet.subset`` draws with the same ``count`` and ``seed``."""
        if count is None or count >= len(self):
            return self
        index = random_draw(len(self), count, seed).to(self.features.device)
        return FeatureSet(self.features[index], self.labels[index])

    def stratified_split(self, fraction: float, seed: int) -> tuple[FeatureSet, FeatureSet]:
        """The rows ``ImageSet.stratified_split`` holds out with the same labels and ``seed``."""
        held = held_out(self.labels, fraction, seed)
        return FeatureSet(self.features[~held], self.labels[~held]), FeatureSet(self.features[held], self.labels[held])


def held_out(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A mask (on ``labels``' device) of ``fraction`` of every class, drawn at random (fixed by ``seed``)."""
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    cpu_labels = labels.cpu()
    held = torch.zeros(len(cpu_labels), dtype=torch.bool)
    for label in cpu_labels.unique():
        members = (cpu_labels == label).nonzero().flatten()
        count = max(1, round(fraction * len(members)))
        held[members[torch.randperm(len(members), generator=generator)[:count]]] = True
    return held.to(labels.device)


def random_draw(population: int, count: int, seed: int) -> torch.Tensor:
    """``count`` distinct indices below ``population``, drawn at random (fixed by ``seed``), sorted."""
    return torch.randperm(population, generator=torch.Generator().manual_seed(seed))[:count].sort().values


def train_batches(data: ImageSet | FeatureSet, batch_size: int, augment: bool,
                  generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled batches as (float images in [0, 1], labels), or (features,
    labels) for a FeatureSet. The last partial batch is dropped so every step sees
    ``batch_size`` images (no tiny noisy steps)."""
    if augment and isinstance(data, FeatureSet):
        raise ValueError("precomputed features cannot be augmented")
    order = torch.randperm(len(data), device=data.labels.device, generator=generator)
    usable = max(len(data) - len(data) % batch_size, min(len(data), batch_size))
    for start in range(0, usable, batch_size):
        index = order[start:start + batch_size]
        if isinstance(data, FeatureSet):
            yield data.features[index], data.labels[index]
            continue
        images = data.images[index]
        if augment:
            images = random_crop_flip(images, max(1, data.size // 8), generator)
        yield to_float(images), data.labels[index]


def eval_batches(data: ImageSet | FeatureSet, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(data), batch_size):
        labels = data.labels[start:start + batch_size]
        if isinstance(data, FeatureSet):
            yield data.features[start:start + batch_size], labels
        else:
            yield to_float(data.images[start:start + batch_size]), labels
