"""The study: builds each trained artifact once (through the cache), runs the grid's cases
and returns their records. Plain library code: the pytest plugin only wires it up."""
from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from . import strategies
from .cache import ArtifactCache, payload_digest
from .companion.resnet_lowrank import LowRankCases
from .companion.vgg_si import VggSiCases
from .compression.architecture import restore_model
from .compression.cases import CompressionCases
from .deploy.cases import DeploymentCases
from .deploy.latency import Timer, eager_latency, measure_latency, torch_threads
from .seeding import derive_seed
from .datasets import DatasetSplits, apply_source_override, load_dataset, parse_source_override
from .datasets.sources import read_synthetic
from .datasets.synthetic import GENERATOR_VERSION
from .errors import ConfigError
from .execution import Execution, keep_freed_memory
from .frozen_features import FeatureStore
from .grid import TECHNIQUE_MODELS, Case, technique_models
from .models import ImageClassifier, build_model, count_parameters, from_pretrained
from .profiles import STUDY_TECHNIQUES, Profile, TrainConfig
from .speed import compare_speed
from .training import evaluate
from .weights import load_pretrained_state, random_init_provenance, resolve_weights_spec

log = logging.getLogger("mnv2bench.study")

NO_PRETRAINED_NOTE = "no pretrained weights: the network starts from random initialisation"
PRETEXT_PALETTE_OFFSET = 0.5
PRETEXT_SEED_OFFSET = 1000
SPEED_TECHNIQUE = "train_speed"


@dataclass(frozen=True)
class Settings:
    """Run options (from the command line or environment); the profile holds the recipe."""

    data_root: Path = Path("data")
    cache_dir: Path = Path(".mnv2cache")
    results_dir: Path = Path(".mnv2results")  # plots made in this run go under it
    device: str | None = None
    download: bool = False
    refresh: bool = False
    run_id: str = "local"
    data_sources: tuple[str, ...] = ()
    weights: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Artifact:
    model: ImageClassifier
    key: str
    status: str
    meta: dict[str, Any]
    start_state: dict[str, torch.Tensor] | None = None  # the exact weights training began from


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} was asked for but no CUDA GPU is visible; "
                          "use --device cpu (the smoke profile runs on the CPU)")
    return torch.device(requested)


class Study:
    def __init__(self, profile: Profile, settings: Settings):
        self.profile = profile
        self.settings = settings
        self.device = resolve_device(settings.device or profile.device)
        self.execution = Execution.resolve(self.device, profile.channels_last, profile.amp)
        self.allocator = keep_freed_memory()
        self.cache = ArtifactCache(Path(settings.cache_dir), run_id=settings.run_id, refresh=settings.refresh)
        self.features = FeatureStore(self.cache, profile.eval_batch_size, self.execution)
        self.datasets = dict(profile.datasets)
        for text in settings.data_sources:
            name, source, path = parse_source_override(text)
            if name not in self.datasets:
                raise ConfigError(f"--data-source names {name!r}, which profile {profile.name!r} lacks; "
                                  f"its datasets: {sorted(self.datasets)}")
            self.datasets[name] = apply_source_override(self.datasets[name], source, path)
        self._loaded: dict[str, DatasetSplits] = {}
        self._sized: dict[tuple[str, int], DatasetSplits] = {}
        self._artifacts: dict[tuple[str, str], Artifact] = {}
        self._start_weights: dict[tuple, tuple[dict | None, dict]] = {}
        self._builders: dict[str, Callable[[str], Artifact]] = {
            "partial_ft": self._partial_ft, "full_ft": self._full_ft, "scratch": self._scratch,
            "kd": self._kd, "teacher": self._teacher, "resnet_head": self._resnet_head,
            **{tech: functools.partial(self._light, tech) for tech in STUDY_TECHNIQUES["light"]},
        }
        self.timer: Timer = measure_latency  # the pytest plugin may time through pytest-benchmark
        self._compressions = CompressionCases(self)
        self._deployments = DeploymentCases(self)
        self._lowrank = LowRankCases(self)
        self._derived = [self._compressions, VggSiCases(self), self._lowrank]  # build their own artifacts
        self._measures: dict[str, Callable[[str, Artifact], dict]] = {
            "resnet_lowrank": self._lowrank.measure,
            **{tech: self._light_latency for tech in STUDY_TECHNIQUES["light"]},
        }

    # data -----------------------------------------------------------------
    def dataset(self, name: str) -> DatasetSplits:
        """The dataset at its native size, on the CPU (loaded once per process)."""
        if name not in self._loaded:
            self._loaded[name] = load_dataset(self.datasets[name], data_root=self.settings.data_root,
                                              download=self.settings.download, seed=self.profile.seed,
                                              cache=self.cache)
        return self._loaded[name]

    def data_at(self, name: str, size: int) -> DatasetSplits:
        """The dataset resized to ``size`` and resident on the study's device."""
        if (name, size) not in self._sized:
            self._sized[name, size] = self.dataset(name).at_size(size, self.device)
        return self._sized[name, size]

    def input_size(self, dataset: str, technique: str) -> int:
        return self.datasets[dataset].size_for(self.profile.train_config(technique, dataset))

    # cases ----------------------------------------------------------------
    def run_case(self, case: Case) -> dict[str, Any]:
        """Train (or load) the case's model, evaluate it, and return its record."""
        events_before = len(self.cache.events)
        if case.technique == SPEED_TECHNIQUE:
            started = time.perf_counter()
            artifact, measured, tags = self._speed(case.dataset)
            history, train_seconds = [], None
        elif self._deployments.handles(case.technique):
            artifact = self._deployments.base_artifact(case.dataset, case.technique)
            started = time.perf_counter()
            measured, tags = self._deployments.measure(case.dataset, case.technique)
            history, train_seconds = [], None  # nothing trained: the base's epochs and time are the base case's
        else:
            artifact = self.artifact(case.dataset, case.technique)
            started = time.perf_counter()
            data = self.data_at(case.dataset, artifact.meta["input_size"])
            accuracy = evaluate(artifact.model, data.test, self.profile.eval_batch_size, self.execution)
            measured, tags = {"accuracy": accuracy, **artifact.meta.get("metrics", {})}, artifact.meta.get("record", {})
            if case.technique in self._measures:
                measured.update(self._measures[case.technique](case.dataset, artifact))
            history, train_seconds = artifact.meta["history"], artifact.meta["train_seconds"]
        return {
            "case": case.id, "dataset": case.dataset, "model": case.model, "technique": case.technique,
            "profile": self.profile.name, "seed": self.profile.seed, **tags,
            "metrics": {
                **measured,
                "floor": self.profile.floor(case.dataset, case.technique),
                "input_size": artifact.meta["input_size"],
                "parameters": count_parameters(artifact.model),
                "epochs": history,
                "train_seconds": train_seconds,
                "eval_seconds": time.perf_counter() - started,  # evaluation or measurement
            },
            "provenance": {"data": self.dataset(case.dataset).provenance, "weights": artifact.meta["weights"],
                           "upstream": artifact.meta.get("upstream", {}), "train": artifact.meta["train"]},
            "cache": {"key": artifact.key, "status": artifact.status,
                      "events": [list(e) for e in self.cache.events[events_before:]]},
            "environment": {**self.execution.record(), "allocator": self.allocator, "torch": torch.__version__,
                            "latency_timer": getattr(self.timer, "name", "harness")},
        }

    def _speed(self, dataset: str) -> tuple[Artifact, dict[str, Any], dict[str, str]]:
        """The harness's training step and evaluation against a plain PyTorch loop, on this
        dataset's images at its input size (nothing cached: the speed is of this run)."""
        cfg = self.profile.train_config(SPEED_TECHNIQUE, dataset)
        size, p = self.input_size(dataset, SPEED_TECHNIQUE), self.profile.studies["speed"]
        data = self.data_at(dataset, size)
        train = data.train.cycled(p["train_images"] - p["train_images"] % cfg.batch_size or cfg.batch_size)
        test = data.test.cycled(p["eval_images"])
        model_name = TECHNIQUE_MODELS[SPEED_TECHNIQUE]
        with torch_threads(p["threads"] or torch.get_num_threads()):
            measured = compare_speed(model_name, data.num_classes, train, test, cfg, self.execution,
                                     self.profile.eval_batch_size, p["rounds"], self.seed_for(dataset, SPEED_TECHNIQUE))
        meta = {"input_size": size, "train": dataclasses.asdict(cfg), "weights": random_init_provenance(model_name)}
        artifact = Artifact(build_model(model_name, data.num_classes), "", "measured", meta)
        return artifact, measured, {"derived": "speed"}

    # artifacts ------------------------------------------------------------
    def artifact(self, dataset: str, technique: str) -> Artifact:
        """The trained model of ``technique`` on ``dataset``: from this process's memory, the
        disk cache, or trained now."""
        if dataset not in self.datasets:
            raise ConfigError(f"unknown dataset {dataset!r}; profile datasets: {sorted(self.datasets)}")
        if (dataset, technique) not in self._artifacts:
            self._artifacts[dataset, technique] = self._build(dataset, technique)
        return self._artifacts[dataset, technique]

    def _build(self, dataset: str, technique: str) -> Artifact:
        for derived in self._derived:
            if derived.handles(technique):
                return derived.artifact(dataset, technique)
        if technique not in self._builders or technique not in self.profile.techniques:
            raise ConfigError(f"technique {technique!r} is not in profile {self.profile.name!r}: "
                              f"{sorted(technique_models(self.profile))}")
        return self._builders[technique](dataset)

    def seed_for(self, dataset: str, technique: str) -> int:
        return derive_seed(self.profile.seed, dataset, technique)

    def _partial_ft(self, dataset: str) -> Artifact:
        return self._train("partial_ft", dataset, self._head_only, self._pretrained_init)

    def _head_only(self, model, data, cfg, **fit_args):
        """Partial fine-tuning, on the frozen backbone's cached features where it can."""
        return strategies.partial_finetune(model, data, cfg, features=self.features, **fit_args)

    def _teacher(self, dataset: str) -> Artifact:
        return self._train("teacher", dataset, strategies.train_all, self._pretrained_init)

    def _scratch(self, dataset: str) -> Artifact:
        return self._train("scratch", dataset, strategies.train_from_scratch, self._random_init)

    def _full_ft(self, dataset: str) -> Artifact:
        upstream = self.artifact(dataset, "partial_ft")
        init = lambda model, classes, size: (_copy_model(upstream.model), upstream.meta["weights"])
        return self._train("full_ft", dataset, strategies.full_finetune, init, {"partial_ft": upstream.key})

    def _resnet_head(self, dataset: str) -> Artifact:
        """The low-rank study's base: a fresh ``fc`` trained on the frozen (pretrained) backbone."""
        return self._train("resnet_head", dataset, self._head_only, self._pretrained_init)

    def _light(self, technique: str, dataset: str) -> Artifact:
        return self._train(technique, dataset, strategies.train_from_scratch, self._random_init)

    def _light_latency(self, dataset: str, artifact: Artifact) -> dict[str, Any]:
        p = self.profile.studies["light"]
        timed = eager_latency({"eager_fp32": artifact.model}, artifact.meta["input_size"], p["batch_sizes"],
                              p["warmup"], p["rounds"], p["threads"], self.timer)
        return {**timed, "threads": p["threads"], "rounds": p["rounds"]}

    def _kd(self, dataset: str) -> Artifact:
        teacher = self.artifact(dataset, "teacher")
        if teacher.meta["input_size"] != self.input_size(dataset, "kd"):
            raise ConfigError(f"{dataset}: the teacher trains at {teacher.meta['input_size']} px but kd at "
                              f"{self.input_size(dataset, 'kd')} px; give both the same 'input' in the profile")
        distill = lambda model, data, cfg, **kw: strategies.distill(model, teacher.model, data, cfg, **kw)
        return self._train("kd", dataset, distill, self._random_init, {"teacher": teacher.key})

    def _train(self, technique: str, dataset: str, strategy: Callable, init: Callable,
               upstream: dict[str, str] | None = None) -> Artifact:
        """Build (or load) one artifact: ``init`` gives the starting model and its weights
        provenance, ``strategy`` trains it."""
        model_name = TECHNIQUE_MODELS[technique]
        cfg = self.profile.train_config(technique, dataset)
        size = self.input_size(dataset, technique)
        splits = self.dataset(dataset)
        seed = self.seed_for(dataset, technique)
        start_weights = self._weights_fingerprint(init, model_name, size)
        spec = {"kind": technique, "model": model_name, "data": splits.provenance["fingerprint"],
                "classes": splits.num_classes, "input_size": size, "train": dataclasses.asdict(cfg),
                "seed": seed, "execution": self.execution.spec(), "weights": start_weights, "upstream": upstream or {},
                "payload": "with-start-state"}
        label = f"{dataset}-{model_name}-{technique}"

        def build() -> dict[str, Any]:
            torch.manual_seed(seed)
            model, weights = init(model_name, splits.num_classes, size)
            model = self.execution.prepare(model)
            start_state = cpu_state(model)
            started = time.perf_counter()
            history = strategy(model, self.data_at(dataset, size), cfg, seed=seed, label=label,
                               eval_batch_size=self.profile.eval_batch_size, execution=self.execution)
            return {"model": model_name, "num_classes": splits.num_classes, "state_dict": cpu_state(model),
                    "start_state": start_state,
                    "meta": {"history": [h.as_dict() for h in history], "weights": weights,
                             "train_seconds": time.perf_counter() - started, "input_size": size,
                             "upstream": upstream or {}, "train": dataclasses.asdict(cfg)}}

        return self.cached(label, spec, build)

    def cached(self, label: str, spec: dict[str, Any], build: Callable[[], dict[str, Any]]) -> Artifact:
        """Fetch or build a model payload through the cache and restore it on the device."""
        result = self.cache.fetch(label, spec, build)
        payload = result.payload
        model = self.execution.prepare(restore_model(payload["model"], payload["num_classes"],
                                                     payload["state_dict"], payload.get("arch")))
        return Artifact(model, result.key, result.status, payload["meta"], payload.get("start_state"))

    # starting weights -------------------------------------------------------
    def _random_init(self, model_name: str, num_classes: int, size: int):
        return build_model(model_name, num_classes), random_init_provenance(model_name)

    def _pretrained_init(self, model_name: str, num_classes: int, size: int):
        state, provenance = self._pretrained_state(model_name, size)
        if state is None:
            return self._random_init(model_name, num_classes, size)
        return from_pretrained(model_name, state, num_classes), provenance

    def _weights_fingerprint(self, init: Callable, model_name: str, size: int) -> Any:
        if init != self._pretrained_init:
            return None
        _, provenance = self._pretrained_state(model_name, size)
        return {"source": provenance["source"], "sha256": provenance["sha256"]}

    def _pretrained_state(self, model_name: str, size: int) -> tuple[dict | None, dict]:
        source = resolve_weights_spec(model_name, self.profile.weights[model_name], self.settings.weights)
        if source.kind == "none":
            return None, random_init_provenance(model_name, NO_PRETRAINED_NOTE)
        if source.kind == "pretext":
            return self._pretext_state(model_name, size)
        memo_key = ("pretrained", model_name, source)
        if memo_key not in self._start_weights:
            self._start_weights[memo_key] = load_pretrained_state(model_name, source)
        return self._start_weights[memo_key]

    def _pretext_state(self, model_name: str, size: int) -> tuple[dict, dict]:
        """Weights trained by the harness on a related synthetic task (hues shifted): the
        offline stand-in for ImageNet pretraining. Trained at [pretext] ``size`` when the
        profile gives one, else at the input size that asks for them."""
        recipe = {k: v for k, v in self.profile.pretext.items() if k != "train_size"}
        cfg = TrainConfig(**recipe)
        size = cfg.size or size  # one pretext resolution for every input size, as ImageNet weights have
        train_size = self.profile.pretext["train_size"]
        seed = derive_seed(self.profile.seed, "pretext", model_name, size)
        spec = {"kind": "pretext", "model": model_name, "size": size, "train": dataclasses.asdict(cfg),
                "train_size": train_size, "seed": seed, "generator": GENERATOR_VERSION}

        def build() -> dict[str, Any]:
            raw = read_synthetic(size, train_size, max(256, train_size // 4),
                                 seed=self.profile.seed + PRETEXT_SEED_OFFSET, palette_offset=PRETEXT_PALETTE_OFFSET)
            splits = DatasetSplits("pretext", raw.train, raw.test, raw.classes, {}).at_size(size, self.device)
            torch.manual_seed(seed)
            model = self.execution.prepare(build_model(model_name, splits.num_classes))
            strategies.train_from_scratch(model, splits, cfg, seed=seed, label=f"pretext-{model_name}-{size}px",
                                          eval_batch_size=self.profile.eval_batch_size, execution=self.execution)
            return {"net_state": {k: v.detach().cpu() for k, v in model.net.state_dict().items()}}

        memo_key = ("pretext", model_name, size)
        if memo_key not in self._start_weights:
            result = self.cache.fetch(f"pretext-{model_name}-{size}px", spec, build)
            state = result.payload["net_state"]
            provenance = {"model": model_name, "source": "pretext:synthetic", "sha256": payload_digest(state),
                          "stand_in": True, "note": "trained by the harness on a synthetic pretext task "
                                                    "(offline stand-in for ImageNet weights)"}
            self._start_weights[memo_key] = (state, provenance)
        return self._start_weights[memo_key]


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _copy_model(model: ImageClassifier) -> ImageClassifier:
    return copy.deepcopy(model)
