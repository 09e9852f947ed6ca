"""Datasets of the grid: load by profile entry, decoded once, with their provenance."""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..cache import ArtifactCache
from ..errors import ConfigError
from ..fingerprint import code_fingerprint
from ..keys import ArtifactKey
from ..profiles import DATA_SOURCES, DEFAULT_STUDIES, MAX_SIDE, DatasetConfig, Profile
from . import sources, synthetic
from .tensors import FeatureSet, ImageSet, eval_batches, random_crop_flip, to_float, train_batches

GENERATED_SOURCES = ("synthetic", "digits")

__all__ = ["DatasetSplits", "FeatureSet", "ImageSet", "load_dataset", "parse_source_override", "eval_batches",
           "train_batches", "random_crop_flip", "to_float", "synthetic", "apply_source_overrides"]


@dataclass(frozen=True)
class DatasetSplits:
    name: str
    train: ImageSet
    test: ImageSet
    classes: tuple[str, ...]
    provenance: dict[str, Any]
    # held out of the training images for choosing among epochs (a recipe's validation_fraction)
    validation: ImageSet | FeatureSet | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def at_size(self, size: int, device: torch.device | str) -> DatasetSplits:
        """Both splits resized to ``size`` px and moved to ``device``."""
        train, test = self.train.to(device).resized(size), self.test.to(device).resized(size)
        return dataclasses.replace(self, train=train, test=test)


def parse_source_override(text: str) -> tuple[str, str, str | None]:
    """``NAME=SOURCE`` or ``NAME=imagefolder:PATH`` -> (name, source, path)."""
    name, sep, spec = text.partition("=")
    source, _, path = spec.partition(":")
    if sep and name and not name.isidentifier():  # it names files: no "../", no "/"
        raise ConfigError(f"bad --data-source {text!r}: the dataset name {name!r} must be a plain identifier "
                          f"(letters, digits, _), e.g. mydata={spec}")
    if not sep or not name or source not in DATA_SOURCES or (source == "imagefolder") != bool(path):
        raise ConfigError(
            f"bad --data-source {text!r}: use NAME=SOURCE with SOURCE one of {list(DATA_SOURCES)}, "
            "and NAME=imagefolder:PATH for an image folder"
        )
    return name, source, path or None




def add_image_folder(profile: Profile, text: str) -> Profile:
    """``--dataset NAME=imagefolder:DIR``: ``profile`` with one more dataset, read from DIR,
    its recipe (input size, per-technique overrides, models) that of the profile's dataset
    nearest in native image size; no accuracy floor is asserted on it (no baseline exists)."""
    name, source, path = parse_source_override(text)
    if source != "imagefolder":
        raise ConfigError(f"bad --dataset {text!r}: a new dataset is NAME=imagefolder:DIR")
    if name in profile.datasets:
        raise ConfigError(f"--dataset {text!r}: profile {profile.name!r} has a dataset {name!r} already; "
                          f"replace its source with --data-source {text}")
    size, sizing = sources.native_size_of(Path(path))
    if size > MAX_SIDE:
        size, sizing = MAX_SIDE, f"{sizing + '; ' if sizing else ''}stored at {MAX_SIDE} px, the largest side kept"
    studied = [d for d in profile.datasets.values() if set(DEFAULT_STUDIES) & set(d.studies)]
    if not studied:
        raise ConfigError(f"profile {profile.name!r} has no dataset running {list(DEFAULT_STUDIES)} to take a recipe from")
    template = min(studied, key=lambda d: abs(d.native_size - size))
    note = (f"your image folder {Path(path).name} ({size} px{f'; {sizing}' if sizing else ''}); recipe of the "
            f"profile's '{template.name}' (nearest native size, {template.native_size} px); floors reported, "
            f"not asserted")
    config = dataclasses.replace(template, name=name, source="imagefolder", path=path, native_size=size,
                                 train_size=None, test_size=None, stand_in=False, note=note,
                                 studies=tuple(s for s in template.studies if s in DEFAULT_STUDIES))
    return dataclasses.replace(profile, datasets={**profile.datasets, name: config}, floors={**profile.floors, name: {}})


def apply_source_override(config: DatasetConfig, source: str, path: str | None) -> DatasetConfig:
    """``config`` read from another source; a real dataset's class count goes with it (a
    folder given as CIFAR-10 must hold its 10 classes)."""
    shown = f"{source}:{Path(path).name}" if path else source  # the folder's name, not the machine's path
    note = f"profile source '{config.source}' replaced by '{shown}'"
    return dataclasses.replace(config, source=source, path=path, stand_in=True,
                               classes=config.classes or sources.NATIVE_CLASSES.get(config.source),
                               note="; ".join(filter(None, [config.note, note])))


def apply_source_overrides(profile: Profile, texts: list[str] | tuple[str, ...]) -> dict[str, DatasetConfig]:
    """The profile's datasets with every ``--data-source`` applied; ConfigError for a malformed
    one or one naming a dataset the profile lacks (checked once, at start-up)."""
    datasets = dict(profile.datasets)
    for text in texts:
        name, source, path = parse_source_override(text)
        if name not in datasets:
            raise ConfigError(f"--data-source names {name!r}, which profile {profile.name!r} lacks; "
                              f"its datasets: {sorted(datasets)}")
        datasets[name] = apply_source_override(datasets[name], source, path)
    return datasets


def load_dataset(config: DatasetConfig, *, data_root: Path, download: bool, seed: int,
                 cache: ArtifactCache | None = None) -> DatasetSplits:
    """Read the dataset at its native size, on the CPU."""
    raw = _read(config, Path(data_root), download, seed, cache)
    if config.classes and len(raw.classes) != config.classes:
        raise ConfigError(f"{Path(raw.location).name} has {len(raw.classes)} classes ({', '.join(raw.classes[:12])}); "
                          f"dataset {config.name!r} expects {config.classes}: give it that "
                          f"dataset's folder, or add yours as a dataset of its own with --dataset NAME=imagefolder:DIR")
    generated = config.source in GENERATED_SOURCES
    train = raw.train if generated else raw.train.subset(config.train_size, seed)
    test = raw.test if generated else raw.test.subset(config.test_size, seed)
    provenance = {
        "dataset": config.name,
        "source": config.source,
        "location": Path(raw.location).name,  # never a machine's absolute path
        "files_sha256": raw.content_sha256 or None,
        "fingerprint": _fingerprint(train, test),
        "native_size": config.native_size,
        "train_images": len(train),
        "test_images": len(test),
        "stand_in": config.stand_in or generated,
        "note": config.note or _default_note(config),
    }
    return DatasetSplits(config.name, train, test, raw.classes, provenance)


def _read(config: DatasetConfig, data_root: Path, download: bool, seed: int,
          cache: ArtifactCache | None) -> sources.RawSplits:
    if config.source in GENERATED_SOURCES:
        if not config.train_size or not config.test_size:
            raise ConfigError(f"generated dataset {config.name!r} needs train_size and test_size")
        generate = sources.read_synthetic if config.source == "synthetic" else sources.read_digits
        return generate(config.native_size, config.train_size, config.test_size, seed)
    if config.source == "mnist":
        return _checked_size(sources.read_mnist(data_root, download), config)
    if config.source == "cifar10":
        return _checked_size(sources.read_cifar10(data_root, download), config)
    if config.source == "stl10":
        return _checked_size(sources.read_stl10(data_root, download), config)
    return _read_image_folder_cached(Path(config.path).expanduser(), config.native_size, cache)


def _read_image_folder_cached(path: Path, native_size: int, cache: ArtifactCache | None) -> sources.RawSplits:
    if cache is None:
        return sources.read_image_folder(path, native_size)
    sources._list_split(path, "train", None)  # fail fast with the layout error
    content = sources.image_folder_fingerprint(path)
    key = ArtifactKey(f"data-{path.name}", "decoded-image-folder", {"content": content, "native_size": native_size},
                      code_fingerprint("mnv2core.datasets.sources"))

    def build():
        raw = sources.read_image_folder(path, native_size)
        return {"train_images": raw.train.images, "train_labels": raw.train.labels,
                "test_images": raw.test.images, "test_labels": raw.test.labels, "classes": list(raw.classes)}

    payload = cache.fetch(key, build).payload
    return sources.RawSplits(ImageSet(payload["train_images"], payload["train_labels"]),
                             ImageSet(payload["test_images"], payload["test_labels"]),
                             tuple(payload["classes"]), str(path), content)


def _checked_size(raw: sources.RawSplits, config: DatasetConfig) -> sources.RawSplits:
    if raw.train.size != config.native_size:
        raise ConfigError(f"dataset {config.name!r}: images are {raw.train.size} px but the profile "
                          f"says native_size = {config.native_size}")
    return raw


def _fingerprint(train: ImageSet, test: ImageSet) -> str:
    return hashlib.sha256((train.fingerprint() + test.fingerprint()).encode()).hexdigest()


def _default_note(config: DatasetConfig) -> str:
    if config.source == "synthetic":
        return "synthetic data generated by the harness (offline stand-in, not a real dataset)"
    if config.source == "digits":
        return "synthetic digits generated by the harness (offline stand-in for MNIST)"
    return ""
