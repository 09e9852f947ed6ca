"""Frozen-backbone features, computed once: when only a classifier trains on a frozen
backbone without augmentation, the backbone's output for every image never changes, so it is
computed once per (backbone weights, images, execution) and kept in the artifact cache (content
key, lock, atomic write, corrupt entries rebuilt). Heads then train and evaluate on it."""
from __future__ import annotations

import dataclasses

import torch

from .cache import ArtifactCache, payload_digest
from .datasets import DatasetSplits, FeatureSet, ImageSet, eval_batches
from .execution import Execution
from .fingerprint import code_fingerprint
from .keys import ArtifactKey
from .models import ImageClassifier


def backbone_state(model: ImageClassifier) -> dict[str, torch.Tensor]:
    """The state of everything before the classifier (what ``embed`` depends on)."""
    prefix = next(name for name, module in model.named_modules() if module is model.classifier) + "."
    return {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}


@torch.no_grad()
def extract_features(model: ImageClassifier, images: ImageSet, batch_size: int,
                     execution: Execution = Execution()) -> torch.Tensor:
    """``model.embed`` of every image, in eval mode, as float32 (N, D) on the images' device
    (no_grad, not inference_mode: heads train on these tensors)."""
    model.eval()
    chunks = []
    for batch, _ in eval_batches(images, execution.inference_batch(batch_size, images.size)):
        with execution.autocast():
            chunks.append(model.embed(batch).float())
    return torch.cat(chunks)


class FeatureStore:
    """Features of frozen backbones, memoised in this process and cached on disk."""

    def __init__(self, cache: ArtifactCache | None, batch_size: int, execution: Execution):
        self.cache = cache
        self.batch_size = batch_size
        self.execution = execution
        self._fingerprints: dict[int, tuple[ImageSet, str]] = {}
        self._memo: dict[ArtifactKey, dict[str, torch.Tensor]] = {}

    def splits(self, model: ImageClassifier, data: DatasetSplits) -> DatasetSplits:
        """``data`` with its splits (train, test, a validation split) replaced by ``model``'s
        frozen features (labels kept)."""
        splits = ("train", "test") + (("validation",) if data.validation is not None else ())
        recipe = {"model": model.name, "backbone": payload_digest(backbone_state(model)),
                  **{split: self._fingerprint(getattr(data, split)) for split in splits},
                  "batch_size": self.batch_size, "channels_last": self.execution.channels_last,
                  "amp": self.execution.amp}
        # named by what it is, shared by every head trained on it
        key = ArtifactKey(f"features-{data.name}-{model.name}-{data.train.size}px", "frozen-features", recipe,
                          code_fingerprint(__name__))
        if key not in self._memo:
            def build() -> dict[str, torch.Tensor]:
                return {split: extract_features(model, getattr(data, split), self.batch_size, self.execution).cpu()
                        for split in splits}

            self._memo[key] = self.cache.fetch(key, build).payload if self.cache else build()
        features = self._memo[key]
        device = data.train.labels.device
        return dataclasses.replace(data, **{split: FeatureSet(features[split].to(device), getattr(data, split).labels)
                                            for split in splits})

    def _fingerprint(self, images: ImageSet) -> str:
        """Content hash of an image set, memoised per object (hashing large sets takes a while;
        the memo keeps the object alive, so its id is never reused for another)."""
        if id(images) not in self._fingerprints:
            self._fingerprints[id(images)] = (images, images.fingerprint())
        return self._fingerprints[id(images)][1]
