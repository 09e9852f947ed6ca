"""The study: resolves a case's technique in the registry, builds each artifact once (through
the cache, seeded) and returns the cases' records. It implements the build context
(``context.Context``) the technique modules see. Plain library code: the pytest plugin only
wires it up."""
from __future__ import annotations

import contextlib
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .cache import ArtifactCache
from .classification import class_scores
from .compression.architecture import restore_model
from .context import Artifact, Case
from .datasets import DatasetSplits, apply_source_overrides, load_dataset
from .deploy.latency import Timer, measure_latencies
from .errors import ConfigError, InconsistentEntry, NotApplicable
from .execution import Execution, keep_freed_memory
from .fingerprint import code_fingerprint
from .fit import diagnose
from .frozen_features import FeatureStore
from .grid import find_case, plan, upstream_of
from .kernels import in_effect as kernels_in_effect
from .keys import ArtifactKey
from .models import ImageClassifier, count_parameters, default_input_size
from .profiles import Profile
from .registry import Catalogue, Technique, require
from .seeding import derive_seed, seed_everything
from .start_weights import StartWeights
from .techniques import catalogue
from .training import history_disagreement

log = logging.getLogger("mnv2bench.study")



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


# Scopes (bases) whose scoped memo entries a process keeps: a MobileNetV2's runtime twins at
# 96 px hold about 350 MB, and a worker of the cpu grid measures a dozen bases
SCOPES_KEPT = 2


class Study:
    def __init__(self, profile: Profile, settings: Settings, techniques: Catalogue | None = None):
        self.profile = profile
        self.settings = settings
        self.catalogue = techniques or catalogue()
        self.device = resolve_device(settings.device or profile.device)
        self.execution = Execution.resolve(self.device, profile.channels_last, profile.amp, profile.kernels)
        self.allocator = keep_freed_memory()
        self.cache = ArtifactCache(settings.cache_dir, run_id=settings.run_id, refresh=settings.refresh)
        self.cache_root = self.cache.files
        self.plots_dir = Path(settings.results_dir) / "plots"
        self.features = FeatureStore(self.cache, profile.eval_batch_size, self.execution)
        self.start_weights = StartWeights(profile, settings.weights, self.cache, self.execution, self.device)
        self.timer: Timer = measure_latencies  # the pytest plugin may time through pytest-benchmark
        self.datasets = apply_source_overrides(profile, settings.data_sources)
        self.templates = plan(profile, self.catalogue)  # case id -> Case(dataset, model, technique, method, base)
        self._loaded: dict[str, DatasetSplits] = {}
        self._sized: dict[tuple[str, int], DatasetSplits] = {}
        self._artifacts: dict[str, Artifact] = {}  # by case id
        self._keys: dict[str, ArtifactKey] = {}  # by case id
        self._memo: dict[tuple, Any] = {}
        self._scopes: dict[Any, set[tuple]] = {}  # a scope's memo keys, least recently used first
        self._building: list[ArtifactKey] = []  # the keys of the artifacts being built, innermost last

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

    def memo(self, key: tuple, make: Callable[[], Any], scope: Any = None) -> Any:
        if scope is not None:
            self._enter_scope(scope, key)
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def _enter_scope(self, scope: Any, key: tuple) -> None:
        """Make ``scope`` the most recently used, and forget the memo entries of the scopes
        beyond the last ``SCOPES_KEPT`` (before ``key`` is made, so their memory is reused)."""
        self._scopes[scope] = self._scopes.pop(scope, set()) | {key}
        while len(self._scopes) > SCOPES_KEPT:
            for stale in self._scopes.pop(next(iter(self._scopes))):
                self._memo.pop(stale, None)

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
                "fit": diagnose(history) if history else None,
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
                            "kernels": {"profile": self.profile.kernels, **kernels_in_effect()},
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
        if self.profile.model(case.model).deploy_only and not technique.takes_onnx:
            raise NotApplicable(f"{case.method} needs the PyTorch network (its graph, weights or gradients); "
                                f"{case.model} is an ONNX file, measured on ONNX Runtime and OpenVINO")
        if technique.role.has_model:
            return self.artifact(case.dataset, case.technique, case.model)
        return self.artifact(case.dataset, case.base, case.model) if case.base else technique.subject(self, case)

    def _metrics(self, case: Case, technique: Technique,
                 artifact: Artifact) -> tuple[dict, list, float | None, bool]:
        """(metrics, per-epoch history, training seconds, whether a deployment's metrics came
        from the cache): a trained or compressed model's test accuracy and its build's metrics;
        a deployment's or measurement's metrics (of this run, or reused when reusable; the
        base's epochs and training time are the base case's)."""
        measured, history, train_seconds, reused = {}, [], None, False
        if technique.role.has_model:
            def evaluated() -> dict[str, Any]:  # the test set is resized only when it is needed
                test = self.data_at(case.dataset, artifact.meta["input_size"]).test
                return class_scores(artifact.model, test, self.profile.eval_batch_size,
                                    self.dataset(case.dataset).num_classes, self.execution)
            test_accuracy, _ = self._reused(case, "accuracy", artifact, {}, evaluated)
            measured = {**test_accuracy, **artifact.meta.get("metrics", {})}
            history, train_seconds = artifact.meta["history"], artifact.meta["train_seconds"]
            problem = history_disagreement(test_accuracy["accuracy"], history)
            if problem is not None:  # the digests catch corruption; this, entries edited with their digests
                raise InconsistentEntry(f"{case.id}: {problem}: its cache entries were changed after they were "
                                        f"written. Rebuild them with --refresh, and check who can write to "
                                        f"{self.settings.cache_dir}")
        if technique.measure is not None:
            def measure() -> dict[str, Any]:
                return technique.measure(self, case, artifact)
            if technique.reusable:
                keyed = self._measurement_params(case.method)
                if technique.machine is not None:
                    keyed = {**keyed, "machine": technique.machine()}
                metrics, reused = self._reused(case, case.method, artifact, keyed, measure)
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
        key = ArtifactKey(f"{case.id}-{what}", f"metrics-{what}",
                          {"params": params, "data": self.dataset(case.dataset).provenance["fingerprint"],
                           "execution": self.execution.spec()},
                          self._code(what), self.seed_for(case.dataset, case.technique), {"model": artifact.key})

        def build() -> dict[str, Any]:
            metrics = compute()
            plot = Path(metrics["plot"]).read_bytes() if "plot" in metrics else b""
            return {"metrics": metrics, "plot": torch.frombuffer(bytearray(plot), dtype=torch.uint8) if plot
                    else torch.empty(0, dtype=torch.uint8)}

        result = self.cache.fetch(key, build)
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
        if technique.role.has_model:
            return {"key": artifact.key.digest, "status": artifact.status}
        return {"key": None, "status": "reused" if reused else "measured",
                "measured_key": artifact.key.digest if artifact.key else None}

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
    def model_case(self, dataset: str, technique: str, model: str | None = None) -> Case:
        """The case of a trained or compressed ``technique`` (one with a model of its own)."""
        case = self.case(dataset, technique, model)
        role = self.catalogue.get(case.method).role
        if not role.has_model:
            raise ConfigError(f"{case.id} is a {role}: it measures a model and has none of its own")
        return case

    def artifact_key(self, dataset: str, technique: str, model: str | None = None) -> ArtifactKey:
        """The cache key of a trained or compressed ``technique``'s model, computed without
        building or loading any model: every model entry's key is assembled here, from what
        every model entry depends on, its builder's recipe, and the keys of its upstream."""
        case = self.model_case(dataset, technique, model)
        if case.id not in self._keys:
            technique_ = self.catalogue.get(case.method)
            upstream = {}
            for up_id in upstream_of(case, self.templates, self.catalogue):
                if up_id not in self.templates:
                    raise ConfigError(f"{case.id} needs {up_id}, which profile {self.profile.name!r} does not run: "
                                      f"add its technique to the profile")
                up = self.templates[up_id]
                upstream[up.technique] = self.artifact_key(up.dataset, up.technique, up.model)
            parts = technique_.builder.key(self, case)
            splits = self.dataset(case.dataset)
            recipe = {"model": case.model, "network": self.profile.model(case.model).identity(),
                      "data": splits.provenance["fingerprint"], "classes": splits.num_classes,
                      "execution": self.execution.spec(), **parts.recipe}
            self._keys[case.id] = ArtifactKey(case.id, case.method, recipe, self._code(case.method),
                                              self.seed_for(case.dataset, case.technique),
                                              {**upstream, **parts.inputs},
                                              target=("artifact", case.dataset, case.technique, case.model))
        return self._keys[case.id]

    def model_key(self, case: Case) -> ArtifactKey | None:
        """The key of the model ``case`` trains, compresses or measures (None: a measurement's
        model, made uncached in its own run)."""
        if self.catalogue.get(case.method).role.has_model:
            return self.artifact_key(case.dataset, case.technique, case.model)
        return self.artifact_key(case.dataset, case.base, case.model) if case.base else None

    def artifact(self, dataset: str, technique: str, model: str | None = None) -> Artifact:
        """The model of a trained or compressed ``technique`` on ``dataset`` (of ``model``;
        None: the dataset's only case of it): from this process's memory, the disk cache, or
        built now. Inside a build, only an artifact its key names (at any depth) may be asked for."""
        case = self.model_case(dataset, technique, model)
        key = self.artifact_key(case.dataset, case.technique, case.model)
        if self._building and key not in set(self._building[-1].walk()):
            raise RuntimeError(f"building {self._building[-1].label} asked for {case.id}, which its key does not "
                               f"name: add {case.technique!r} to its technique's needs")
        if case.id not in self._artifacts:
            self._building.append(key)
            try:
                self._artifacts[case.id] = self._fetch(case, key)
            finally:
                self._building.pop()
        return self._artifacts[case.id]

    def _fetch(self, case: Case, key: ArtifactKey) -> Artifact:
        """The model of ``key`` from the cache, or built now (its upstream models first, then
        seeded, so the build does not depend on what ran before it in this process), restored
        on the device."""
        upstream = {name: up for name, up in key.upstream.items() if up.target[:1] == ("artifact",)}

        def build() -> dict[str, Any]:
            for up in upstream.values():
                self.artifact(*up.target[1:])
            seed_everything(key.seed)
            started = time.perf_counter()
            payload = self.catalogue.get(case.method).builder.build(self, case, key)
            payload["meta"].setdefault("train_seconds", time.perf_counter() - started)
            payload["meta"]["upstream"] = {name: up.digest for name, up in upstream.items()}
            return payload

        result = self.cache.fetch(key, build)
        payload = result.payload
        model = self.execution.prepare(restore_model(payload["model"], payload["num_classes"],
                                                     payload["state_dict"], payload.get("arch")))
        return Artifact(model, key, result.status, payload["meta"], payload.get("start_state"))

    def _code(self, method: str) -> str:
        """The fingerprint of the code behind ``method``'s entries: its module and everything it
        imports from mnv2core (a test accuracy: the evaluation's, in training.py)."""
        module = self.catalogue.get(method).module if method in self.catalogue.techniques else "mnv2core.training"
        return code_fingerprint(module)

    # starting weights -------------------------------------------------------
    def start_model(self, model_name: str, num_classes: int, size: int,
                    pretrained: bool) -> tuple[ImageClassifier, dict[str, Any]]:
        return self.start_weights.model(model_name, num_classes, size, pretrained)

    def start_fingerprint(self, model_name: str, size: int, pretrained: bool) -> dict | ArtifactKey | None:
        return self.start_weights.fingerprint(model_name, size, pretrained)
