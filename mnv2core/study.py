"""The study: resolves a case's technique in the registry, builds each artifact once (through
the cache, seeded) and returns the cases' records. It implements the build context
(``context.Context``) the technique modules see. Plain library code: the pytest plugin only
wires it up."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from . import strategies
from .cache import ArtifactCache, payload_digest
from .compression.architecture import restore_model
from .context import Artifact, Build, Case
from .datasets import DatasetSplits, apply_source_overrides, load_dataset
from .datasets.sources import read_synthetic
from .deploy.latency import Timer, measure_latencies
from .errors import ConfigError, WeightsUnavailableError
from .execution import Execution, keep_freed_memory
from .fingerprint import code_fingerprint
from .frozen_features import FeatureStore
from .grid import find_case, plan
from .models import ImageClassifier, build_model, count_parameters, default_input_size, from_pretrained
from .profiles import Profile, TrainConfig
from .registry import COMPRESSION, TRAINED, Catalogue, Technique, require
from .seeding import derive_seed, rng_preserved, seed_everything
from .techniques import catalogue
from .training import evaluate
from .weights import load_pretrained_state, random_init_provenance, resolve_weights_spec, weights_env_var

log = logging.getLogger("mnv2bench.study")

NO_PRETRAINED_NOTE = "no pretrained weights: the network starts from random initialisation"
PRETEXT_PALETTE_OFFSET = 0.5
PRETEXT_SEED_OFFSET = 1000


@dataclass(frozen=True)
class Settings:
    """Run options (from the command line or environment); the profile holds the recipe."""

    data_root: Path = Path("data")
    cache_dir: Path | str = Path(".mnv2cache")  # a folder, or a shared store's URL (s3://bucket/prefix)
    results_dir: Path = Path(".mnv2results")  # plots made in this run go under it
    device: str | None = None
    download: bool = False
    refresh: bool = False
    run_id: str = "local"
    data_sources: tuple[str, ...] = ()
    weights: dict[str, str] = field(default_factory=dict)


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} was asked for but no CUDA GPU is visible; "
                          "use --device cpu (the smoke profile runs on the CPU)")
    return torch.device(requested)


@contextlib.contextmanager
def modes_restored(model: torch.nn.Module):
    """Give every module back the train/eval mode it had on entry."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


class Study:
    def __init__(self, profile: Profile, settings: Settings, techniques: Catalogue | None = None):
        self.profile = profile
        self.settings = settings
        self.catalogue = techniques or catalogue()
        self.device = resolve_device(settings.device or profile.device)
        self.execution = Execution.resolve(self.device, profile.channels_last, profile.amp)
        self.allocator = keep_freed_memory()
        self.cache = ArtifactCache(settings.cache_dir, run_id=settings.run_id, refresh=settings.refresh)
        self.cache_root = self.cache.files
        self.plots_dir = Path(settings.results_dir) / "plots"
        self.features = FeatureStore(self.cache, profile.eval_batch_size, self.execution)
        self.timer: Timer = measure_latencies  # the pytest plugin may time through pytest-benchmark
        self.datasets = apply_source_overrides(profile, settings.data_sources)
        self.templates = plan(profile, self.catalogue)  # case id -> Case(dataset, model, technique, method, base)
        self._loaded: dict[str, DatasetSplits] = {}
        self._sized: dict[tuple[str, int], DatasetSplits] = {}
        self._artifacts: dict[str, Artifact] = {}  # by case id
        self._start_weights: dict[tuple, tuple[dict | None, dict]] = {}
        self._memo: dict[tuple, Any] = {}
        self._building: list[str] = []  # techniques whose artifacts are being built, innermost last

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

    def seed_for(self, dataset: str, technique: str) -> int:
        return derive_seed(self.profile.seed, dataset, technique)

    def memo(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    # cases ----------------------------------------------------------------
    def case(self, dataset: str, technique: str, model: str | None = None) -> Case:
        """The grid case of ``technique`` on ``dataset`` (of ``model``; None: the only one)."""
        if dataset not in self.datasets:
            raise ConfigError(f"unknown dataset {dataset!r}; profile datasets: {sorted(self.datasets)}")
        found = find_case(self.templates, dataset, technique, model)
        if found is None:
            known = sorted({c.technique for c in self.templates.values() if c.dataset == dataset})
            raise ConfigError(f"technique {technique!r}{f' of {model}' if model else ''} is not in profile "
                              f"{self.profile.name!r} on {dataset}: {known}")
        return found

    def run_case(self, case: Case) -> dict[str, Any]:
        """Build (or load) the case's model, evaluate or measure it, and return its record."""
        technique = self.catalogue.get(case.method)
        events_before = len(self.cache.events)
        started = time.perf_counter()
        artifact = self._measured_model(case, technique)
        built = time.perf_counter()
        with modes_restored(artifact.model):  # measuring never changes a cached model's modes
            measured, history, train_seconds, reused = self._metrics(case, technique, artifact)
        tags = {"base": case.base, "derived": case.method} if case.base else artifact.meta.get("record", {})
        return {
            "case": case.id, "dataset": case.dataset, "model": case.model, "technique": case.technique,
            "method": case.method,
            "profile": self.profile.name, "seed": self.profile.seed, **tags,
            "metrics": {
                **measured,
                "floor": self.profile.floor(case.dataset, case.technique, case.model),
                "input_size": artifact.meta["input_size"],
                "parameters": count_parameters(artifact.model),
                "epochs": history,
                "train_seconds": train_seconds,  # of the model's build, whenever that ran
                "build_seconds": built - started,  # getting the model in this run: built, or loaded
                "measure_seconds": time.perf_counter() - built,  # evaluating or measuring it
            },
            "provenance": {"data": self.dataset(case.dataset).provenance, "weights": artifact.meta["weights"],
                           "network": self._network(artifact.model),
                           "upstream": artifact.meta.get("upstream", {}), "train": artifact.meta["train"]},
            "cache": {**self._cache_status(technique, artifact, reused),
                      "events": [list(e) for e in self.cache.events[events_before:]]},
            "environment": {**self.execution.record(), "host": platform.node(), "allocator": self.allocator,
                            "torch": torch.__version__,
                            "latency_timer": getattr(self.timer, "name", "harness")},
        }

    def _network(self, model: torch.nn.Module) -> dict[str, Any]:
        """Which library network it is, and the input size the library's weights were made for."""
        spec = getattr(model, "spec", None)
        if spec is None:
            return {}
        return self.memo(("network", spec.identity()["source"], spec.arch),
                         lambda: {**spec.identity(), "library_input_size": default_input_size(spec)})

    def _measured_model(self, case: Case, technique: Technique) -> Artifact:
        """A trained or compressed case's own model; a deployment's base model; a
        measurement's (uncached) model."""
        if technique.role in (TRAINED, COMPRESSION):
            return self.artifact(case.dataset, case.technique, case.model)
        return self.artifact(case.dataset, case.base, case.model) if case.base else technique.build(self, case)

    def _metrics(self, case: Case, technique: Technique,
                 artifact: Artifact) -> tuple[dict, list, float | None, bool]:
        """(metrics, per-epoch history, training seconds, whether a deployment's metrics came
        from the cache): a trained or compressed model's test accuracy and its build's metrics;
        a deployment's or measurement's metrics (of this run, or reused when reusable; the
        base's epochs and training time are the base case's)."""
        measured, history, train_seconds, reused = {}, [], None, False
        if technique.role in (TRAINED, COMPRESSION):
            def evaluated() -> dict[str, float]:  # the test set is resized only when it is needed
                test = self.data_at(case.dataset, artifact.meta["input_size"]).test
                return {"accuracy": evaluate(artifact.model, test, self.profile.eval_batch_size, self.execution)}
            test_accuracy, _ = self._reused(case, "accuracy", artifact, {}, evaluated)
            measured = {**test_accuracy, **artifact.meta.get("metrics", {})}
            history, train_seconds = artifact.meta["history"], artifact.meta["train_seconds"]
        if technique.measure is not None:
            def measure() -> dict[str, Any]:
                return technique.measure(self, case, artifact)
            if technique.reusable:
                metrics, reused = self._reused(case, case.method, artifact, self._measurement_params(case.method),
                                               measure)
                params = self.profile.deployments.get(case.method, {})  # checked as the profile says now
                measured.update(metrics, **{k: v for k, v in params.items() if k in technique.thresholds})
            else:
                measured.update(measure())
        return measured, history, train_seconds, reused

    def _measurement_params(self, method: str) -> dict[str, Any]:
        """What a deployment's metrics depend on: its own parameters and those of the techniques
        it uses (FGSM and PGD attack the int8 twin too), less the checks' thresholds, which
        change no number."""
        used = (method, *self.catalogue.get(method).uses)
        return {name: {k: v for k, v in params.items() if k not in self.catalogue.get(name).thresholds}
                for name, params in self.profile.deployments.items() if name in used}

    def _reused(self, case: Case, what: str, artifact: Artifact, params: dict[str, Any],
                compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """(metrics, whether they came from the cache) of ``artifact``'s model that depend only
        on it, the data and ``params``: computed once and kept in the cache (with the PNG a
        ``plot`` names, written to this run's plots folder)."""
        spec = {"kind": f"metrics-{what}", "model": artifact.key, "params": params,
                "data": self.dataset(case.dataset).provenance["fingerprint"], "execution": self.execution.spec(),
                "seed": self.seed_for(case.dataset, case.technique), "code": self._code(what)}

        def build() -> dict[str, Any]:
            metrics = compute()
            plot = Path(metrics["plot"]).read_bytes() if "plot" in metrics else b""
            return {"metrics": metrics, "plot": torch.frombuffer(bytearray(plot), dtype=torch.uint8) if plot
                    else torch.empty(0, dtype=torch.uint8)}

        result = self.cache.fetch(f"{case.id}-{what}", spec, build)
        payload, metrics = result.payload, dict(result.payload["metrics"])
        if "plot" in metrics:
            target = self.plots_dir / Path(metrics["plot"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(payload["plot"].numpy().tobytes())
            metrics["plot"] = str(target)
        return metrics, result.status == "loaded"

    @staticmethod
    def _cache_status(technique: Technique, artifact: Artifact, reused: bool) -> dict[str, Any]:
        """The case's own model's cache key and status; a measurement has no model of its own
        (it names the model it measured, whose status is that case's): "measured" in this
        run, or "reused" when its metrics came from the cache."""
        if technique.role in (TRAINED, COMPRESSION):
            return {"key": artifact.key, "status": artifact.status}
        return {"key": None, "status": "reused" if reused else "measured", "measured_key": artifact.key or None}

    def check(self, case: Case, record: dict[str, Any]) -> None:
        """What the case's technique guarantees of its metrics, then the profile's accuracy
        floor; CheckFailed (an AssertionError) names what broke."""
        technique = self.catalogue.get(case.method)
        metrics = record["metrics"]
        undeclared = self.catalogue.declarations(case.method).undeclared(metrics)
        require(not undeclared, f"{case.id}: metrics {undeclared} are not declared by technique {case.method!r} "
                                f"(add them to its Technique(metrics=...))")
        if technique.check is not None:
            technique.check(metrics, case)
        if metrics["floor"] is not None:
            require(metrics["accuracy"] >= metrics["floor"],
                    f"{case.id}: test accuracy {metrics['accuracy']:.4f} is below the floor {metrics['floor']} "
                    f"of profile {self.profile.name!r}")

    # artifacts ------------------------------------------------------------
    def artifact(self, dataset: str, technique: str, model: str | None = None) -> Artifact:
        """The model of a trained or compressed ``technique`` on ``dataset`` (of ``model``;
        None: the dataset's only case of it): from this process's memory, the disk cache, or
        built now."""
        case = self.case(dataset, technique, model)
        builder = self.catalogue.get(case.method)
        if builder.role not in (TRAINED, COMPRESSION):
            raise ConfigError(f"{case.id} is a {builder.role}: it measures a model and has none of its own")
        if case.id not in self._artifacts:
            self._building.append(builder.name)  # what its fetches are keyed by the code of
            try:
                self._artifacts[case.id] = builder.build(self, case)
            finally:
                self._building.pop()
        return self._artifacts[case.id]

    def _code(self, method: str) -> str:
        """The fingerprint of the code behind ``method``'s entries: its module and everything it
        imports from mnv2core (a test accuracy: the evaluation's, in training.py)."""
        module = self.catalogue.get(method).module if method in self.catalogue.techniques else "mnv2core.training"
        return code_fingerprint(module)

    def fetch(self, label: str, spec: dict[str, Any], seed: int, build: Build) -> Artifact:
        """Fetch or build a model payload through the cache (the build seeded first, so it
        does not depend on what ran before it in this process) and restore it on the device."""
        def seeded() -> dict[str, Any]:
            seed_everything(seed)
            started = time.perf_counter()
            payload = build()
            payload["meta"].setdefault("train_seconds", time.perf_counter() - started)
            return payload

        result = self.cache.fetch(label, self.entry_spec(spec, seed), seeded)
        payload = result.payload
        model = self.execution.prepare(restore_model(payload["model"], payload["num_classes"],
                                                     payload["state_dict"], payload.get("arch")))
        return Artifact(model, result.key, result.status, payload["meta"], payload.get("start_state"))

    def entry_spec(self, spec: dict[str, Any], seed: int) -> dict[str, Any]:
        """A model's whole cache spec: its builder's, the seed, and the fingerprint of the code
        of the technique being built."""
        code = self._code(self._building[-1]) if self._building else code_fingerprint("mnv2core.study")
        return {**spec, "seed": seed, "code": code}

    # starting weights -------------------------------------------------------
    def start_model(self, model_name: str, num_classes: int, size: int,
                    pretrained: bool) -> tuple[ImageClassifier, dict[str, Any]]:
        spec = self.profile.model(model_name)
        state, provenance = self._pretrained_state(model_name, size) if pretrained else (None, None)
        if state is None:
            return build_model(spec, num_classes), provenance or random_init_provenance(model_name)
        return from_pretrained(spec, state, num_classes, keep_head=spec.trained), provenance

    def start_fingerprint(self, model_name: str, size: int, pretrained: bool) -> Any:
        """What identifies the starting weights: a weights file's sha256, or the recipe of the
        harness's pretext weights (their cache entry: known without training them, so a
        cluster's plan has every key before anything runs)."""
        if not pretrained:
            return None
        if self._weights_source(model_name).kind == "pretext":
            return {"source": "pretext:synthetic", "recipe": self.pretext_entry(model_name, size)}
        _, provenance = self._pretrained_state(model_name, size)
        return {"source": provenance["source"], "sha256": provenance["sha256"]}

    def _weights_source(self, model_name: str):
        return resolve_weights_spec(model_name, self.profile.model(model_name).weights, self.settings.weights)

    def _pretrained_state(self, model_name: str, size: int) -> tuple[dict | None, dict]:
        spec = self.profile.model(model_name)
        source = self._weights_source(model_name)
        if source.kind == "none":
            if spec.trained:
                raise WeightsUnavailableError(
                    f"{model_name} is marked trained for the dataset but has no weights: give its file with "
                    f"--weights {model_name}=PATH or {weights_env_var(model_name)}=PATH")
            return None, random_init_provenance(model_name, NO_PRETRAINED_NOTE)
        if source.kind == "pretext":
            return self.pretext_state(model_name, size)
        memo_key = ("pretrained", model_name, source)
        if memo_key not in self._start_weights:
            self._start_weights[memo_key] = load_pretrained_state(spec, source)
        return self._start_weights[memo_key]

    def _pretext_recipe(self, model_name: str, size: int) -> tuple[str, dict[str, Any], TrainConfig, int, int]:
        """(label, cache spec, recipe, size, seed) of the pretext weights for ``model_name``
        at ``size``: [pretext] ``size`` when the profile gives one (one pretext resolution for
        every input size, as ImageNet weights have), else the input size that asks for them."""
        cfg = TrainConfig(**{k: v for k, v in self.profile.pretext.items() if k != "train_size"})
        size = cfg.size or size
        seed = derive_seed(self.profile.seed, "pretext", model_name, size)
        spec = {"kind": "pretext", "code": code_fingerprint("mnv2core.strategies"), "model": model_name,
                "network": self.profile.model(model_name).identity(), "size": size, "train": dataclasses.asdict(cfg),
                "train_size": self.profile.pretext["train_size"], "seed": seed,
                "generator": code_fingerprint("mnv2core.datasets.sources")}
        return f"pretext-{model_name}-{size}px", spec, cfg, size, seed

    def pretext_entry(self, model_name: str, size: int) -> str:
        """The cache entry name (label and content key) of the pretext weights."""
        label, spec, *_ = self._pretext_recipe(model_name, size)
        return self.cache.entry_name(label, spec)

    def pretext_state(self, model_name: str, size: int) -> tuple[dict, dict]:
        """Weights trained by the harness on a related synthetic task (hues shifted): the
        offline stand-in for ImageNet pretraining (built once, through the cache)."""
        label, spec, cfg, size, seed = self._pretext_recipe(model_name, size)
        train_size = self.profile.pretext["train_size"]

        def build() -> dict[str, Any]:
            raw = read_synthetic(size, train_size, max(256, train_size // 4),
                                 seed=self.profile.seed + PRETEXT_SEED_OFFSET, palette_offset=PRETEXT_PALETTE_OFFSET)
            splits = DatasetSplits("pretext", raw.train, raw.test, raw.classes, {}).at_size(size, self.device)
            seed_everything(seed)
            model = self.execution.prepare(build_model(self.profile.model(model_name), splits.num_classes))
            strategies.train_from_scratch(model, splits, cfg, seed=seed, label=f"{label}",
                                          eval_batch_size=self.profile.eval_batch_size, execution=self.execution)
            return {"net_state": {k: v.detach().cpu() for k, v in model.net.state_dict().items()}}

        memo_key = ("pretext", model_name, size)
        if memo_key not in self._start_weights:
            with rng_preserved():  # built or loaded, the build asking for them draws alike
                result = self.cache.fetch(label, spec, build)
            state = result.payload["net_state"]
            provenance = {"model": model_name, "source": "pretext:synthetic", "sha256": payload_digest(state),
                          "stand_in": True, "note": "trained by the harness on a synthetic pretext task "
                                                    "(offline stand-in for ImageNet weights)"}
            self._start_weights[memo_key] = (state, provenance)
        return self._start_weights[memo_key]
