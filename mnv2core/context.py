"""What a technique sees of a run: the case it builds or measures, the artifact it returns,
and the small build-context interface the study implements. Technique modules import this
module, never the study."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from .datasets import DatasetSplits
from .execution import Execution
from .frozen_features import FeatureStore
from .keys import ArtifactKey
from .models import ImageClassifier
from .profiles import Profile


@dataclass(frozen=True)
class Case:
    """One cell of the grid. ``technique`` is the grid's name ("kd_prune"); ``method`` the
    registered technique that builds or measures it ("prune"); ``base`` the technique whose
    model it compresses or measures (None for a technique trained from its own recipe)."""

    dataset: str
    model: str
    technique: str
    method: str = ""
    base: str | None = None

    def __post_init__(self):
        if not self.method:
            object.__setattr__(self, "method", self.technique)

    @property
    def id(self) -> str:
        return f"{self.dataset}-{self.model}-{self.technique}"


@dataclass(frozen=True)
class Artifact:
    """A model of the study with its cache key (None: a measurement's uncached model), cache
    status ("built", "loaded", "measured") and metadata (history, weights provenance, metrics
    of its build...)."""

    model: ImageClassifier
    key: ArtifactKey | None
    status: str
    meta: dict[str, Any]
    start_state: dict[str, torch.Tensor] | None = None  # the exact weights training began from


@dataclass(frozen=True)
class Recipe:
    """What a builder's ``key`` says of its entry beyond what every model entry holds (the
    model, its network, the data, the execution, the seed, its code, its upstream cases'
    keys): its own recipe and parameters, and the keys of artifacts it starts from that are
    not cases of the grid (``weights``: the harness's pretext weights)."""

    recipe: dict[str, Any]
    inputs: dict[str, ArtifactKey] = field(default_factory=dict)


class Builder(Protocol):
    """How a trained or compressed technique makes its model, in two parts: ``key`` (pure and
    cheap: it builds and loads nothing, so a plan can key every artifact before anything runs)
    and ``build`` (the training; returns the payload the cache keeps, ``model_payload``). The
    study assembles the entry's key from ``key``'s recipe and seeds before ``build``."""

    def key(self, ctx: Context, case: Case) -> Recipe: ...

    def build(self, ctx: Context, case: Case, key: ArtifactKey) -> dict[str, Any]: ...


class TechniqueLookup(Protocol):
    """The registry's catalogue as the context hands it on (``registry.Catalogue``)."""

    def get(self, name: str) -> Any: ...


class Context(Protocol):
    """The study as a technique sees it."""

    profile: Profile
    catalogue: TechniqueLookup  # every registered technique (a base's retraining strategy, a method's needs)
    execution: Execution
    device: torch.device
    features: FeatureStore  # frozen-backbone features, computed once per backbone and data
    timer: Callable  # latency timer (the harness's, or pytest-benchmark's in serial runs)
    cache_root: Path  # files kept with the artifacts they describe (ONNX, spectra, plots)
    plots_dir: Path  # plots of this run's measurements

    def dataset(self, name: str) -> DatasetSplits:
        """The dataset at its native size, on the CPU."""

    def data_at(self, name: str, size: int) -> DatasetSplits:
        """The dataset resized to ``size`` px, on the study's device."""

    def input_size(self, dataset: str, technique: str) -> int: ...

    def seed_for(self, dataset: str, technique: str) -> int: ...

    def artifact(self, dataset: str, technique: str, model: str | None = None) -> Artifact:
        """Another technique's model on ``dataset`` (of ``model``; None: the dataset's only
        case of that technique), built once, through the cache. A build may load only the
        artifacts its key names (upstream, at any depth)."""

    def start_model(self, model_name: str, num_classes: int, size: int,
                    pretrained: bool) -> tuple[ImageClassifier, dict[str, Any]]:
        """A fresh model and its weights provenance: the profile's weights for ``model_name``
        when ``pretrained`` (with a new head, or their own for a ready-trained model), random
        initialisation otherwise."""

    def start_fingerprint(self, model_name: str, size: int, pretrained: bool) -> dict | ArtifactKey | None:
        """What identifies ``start_model``'s weights in a cache key: a weights file's source and
        sha256, the key of the harness's pretext weights (an upstream artifact), or None."""

    def memo(self, key: tuple, make: Callable[[], Any], scope: Any = None) -> Any:
        """``make()`` once per process and key (int8 twins and the like). Entries of a
        ``scope`` (a base's key) are kept while it is among the last few scopes used, then
        forgotten (made again if asked for again)."""


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def model_payload(model: ImageClassifier, meta: dict[str, Any], *, arch: dict | None = None,
                  start_state: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """What the cache stores of a model: enough to rebuild it (name, classes, architecture
    changes, weights) plus its metadata and, for the lottery ticket, its start weights."""
    return {"model": model.spec.identity(), "num_classes": model.num_classes, "arch": arch,
            "state_dict": cpu_state(model), "start_state": start_state, "meta": meta}
