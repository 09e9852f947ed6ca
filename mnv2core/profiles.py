"""Profiles: the data that says what a run trains, how long, and what it must reach.

A profile is one TOML file in ``mnv2core/profiles/`` (or any path). It holds the datasets,
the weights each model starts from, the training recipe of each technique (with optional
per-dataset overrides) and the accuracy floor each case asserts.
"""
from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .gate import Tolerances

PROFILE_DIR = Path(__file__).parent / "profiles"
PRETRAINABLE_MODELS = ("mobilenet_v2", "resnet50", "resnet18")  # the others train from random init
DATA_SOURCES = ("synthetic", "digits", "cifar10", "stl10", "mnist", "imagefolder")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "onecycle", "cosine", "step")
INPUT_MODES = ("upscaled", "native")
# compression technique -> its parameters and their defaults
COMPRESSIONS: dict[str, dict[str, Any]] = {
    "prune": {"rounds": 3, "amount": 0.2},
    "structured": {"ratio": 0.4, "criterion": "l1"},
    "lottery": {},
    "svd": {"energy": 0.95, "keep_ratios": [0.5, 0.2]},
    "spectra": {"energy": 0.95},
}
UNTRAINED_COMPRESSIONS = ("spectra",)
# study -> its trained techniques; a dataset runs the studies it lists (compression and
# deployment techniques belong to the MobileNetV2 study of their base)
STUDY_TECHNIQUES: dict[str, tuple[str, ...]] = {
    "mobilenet": ("partial_ft", "full_ft", "scratch", "kd", "teacher"),
    "vgg_si": ("vgg_train", "vgg_head", "vgg_si"),
    "light": ("light_cnn", "light_mlp", "light_lenet", "light_ultra", "light_medium"),
    "lowrank": ("resnet_head", "resnet_lowrank"),
    "speed": ("train_speed",),
}
UNFLOORED_TECHNIQUES = ("train_speed",)  # measurements of speed: no accuracy to floor
# study -> its parameters and their defaults ([studies.NAME] in a profile)
STUDY_PARAMS: dict[str, dict[str, Any]] = {
    "mobilenet": {},
    # learning-rate search on a stratified validation split, then separation-index compression
    "vgg_si": {"validation_fraction": 0.1, "lr_candidates": [0.01, 0.05, 0.1], "step_candidates": [],
               "search_epochs": 10, "si_fraction": 0.1, "si_pool": 2, "layer_gain": 0.01,
               "feature_gain": 0.002, "max_features": 128},
    "light": {"batch_sizes": [1, 64], "warmup": 5, "rounds": 50, "threads": 1},
    "lowrank": {"layers": ["layer2.0.conv1", "fc"], "energy": 0.95, "keep_ratios": [0.5, 0.2],
                "batch_size": 64, "warmup": 5, "rounds": 50, "threads": 1},
    # the harness against a plain PyTorch loop, images per timed round; threads 0: the run's;
    # the case fails if the harness trains slower than min_train_speedup x the plain loop
    "speed": {"train_images": 256, "eval_images": 512, "rounds": 3, "threads": 0, "min_train_speedup": 1.0},
}  # analyses: no retraining, no accuracy floor
# deployment/security technique -> its parameters and their defaults (measurements of a
# trained or compressed model: nothing is trained, nothing cached, no accuracy floor)
DEPLOYMENTS: dict[str, dict[str, Any]] = {
    "int8": {"calibration_batches": 8, "max_drop": 0.05},
    "onnx": {"min_top1_agreement": 0.999},
    "latency": {"batch_sizes": [1, 32], "warmup": 3, "rounds": 20, "threads": 1},
    "fgsm": {"epsilon": 0.05},
    "robustness": {"blur_sigmas": [0.5, 1.0, 2.0], "noise_sigmas": [0.05, 0.1, 0.2]},
    "gradcam": {"layer": "", "images": 64, "overlays": 4, "steps": 10},
}


@dataclass(frozen=True)
class TrainConfig:
    """How one technique trains. ``input`` picks the dataset's input size or its native size.
    ``bn_recalibration_images`` > 0 re-estimates batch-norm statistics on that many training
    images after the last epoch (precise BN; short runs leave them behind the weights).
    ``size`` > 0 trains at that many px whatever ``input`` says; the ``step`` schedule
    multiplies the lr by ``gamma`` every ``step_epochs`` epochs."""

    epochs: int
    batch_size: int
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "constant"
    augment: bool = True
    input: str = "upscaled"
    temperature: float = 4.0
    alpha: float = 0.9
    bn_recalibration_images: int = 0
    size: int = 0
    step_epochs: int = 1
    gamma: float = 0.1

    def validate(self, where: str) -> None:
        _check_choice(self.optimizer, OPTIMIZERS, f"{where}.optimizer")
        _check_choice(self.schedule, SCHEDULES, f"{where}.schedule")
        _check_choice(self.input, INPUT_MODES, f"{where}.input")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"{where}: epochs and batch_size must be >= 1")
        if self.lr <= 0 or self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"{where}: need lr > 0, temperature > 0 and 0 <= alpha <= 1")
        if self.size < 0 or self.step_epochs < 1 or not 0 < self.gamma <= 1:
            raise ConfigError(f"{where}: need size >= 0, step_epochs >= 1 and 0 < gamma <= 1")


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset of the grid. ``native_size`` is the stored resolution; ``input_size``
    the resolution models see (larger means upscaled)."""

    name: str
    source: str
    native_size: int
    input_size: int
    path: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    note: str = ""
    stand_in: bool = False
    compress: bool = True  # run the profile's compression techniques on this dataset
    studies: tuple[str, ...] = ("mobilenet",)  # the studies whose techniques run on it
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def size_for(self, train: TrainConfig) -> int:
        if train.size:
            return train.size
        return self.native_size if train.input == "native" else self.input_size

    def runs(self, technique: str) -> bool:
        """Whether ``technique`` (trained, compressed or deployed) belongs to a study of this dataset."""
        return technique_study(technique) in self.studies


@dataclass(frozen=True)
class Compression:
    """One compression technique: its parameters, and the changes its retraining makes to
    the recipe of the model it compresses (the "base")."""

    name: str
    params: dict[str, Any]
    retrain: dict[str, Any]

    def technique(self, base: str) -> str:
        return compressed_technique(base, self.name)


def technique_study(technique: str) -> str:
    for study, techniques in STUDY_TECHNIQUES.items():
        if technique in techniques:
            return study
    return "mobilenet"  # compressed and deployed techniques of the MobileNetV2 study


def compressed_technique(base: str, compression: str) -> str:
    """The grid's name for ``compression`` applied to the model of technique ``base``."""
    return f"{base}_{compression}"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    device: str
    seed: int
    eval_batch_size: int
    amp: bool  # bf16 autocast where the device supports it (CUDA; CPUs with AVX512-BF16 or AMX)
    threads: int | None  # torch CPU threads per process; None: cores / xdist workers
    datasets: dict[str, DatasetConfig]
    weights: dict[str, str]
    techniques: dict[str, TrainConfig]
    floors: dict[str, dict[str, float]]
    pretext: dict[str, Any]
    gate: Tolerances = Tolerances()
    compression_bases: tuple[str, ...] = ()
    compressions: dict[str, Compression] = field(default_factory=dict)
    deployment_bases: tuple[str, ...] = ()
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)  # companion studies' parameters
    channels_last: bool = True  # conv nets train and run in NHWC (faster on CPU and GPU)

    def deployment_cases(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(technique, base, deployment, params) for every deployment of every base (a
        technique's own ``bases`` narrow the table's)."""
        return [(f"{base}_{name}", base, name, params) for name, params in self.deployments.items()
                for base in params.get("bases", self.deployment_bases)]

    def compressed_cases(self) -> list[tuple[str, str, Compression]]:
        """(technique, base, compression) for every compression of every base."""
        return [(c.technique(base), base, c) for base in self.compression_bases for c in self.compressions.values()]

    def retrain_config(self, compression: Compression, base: str, dataset: str) -> TrainConfig:
        return dataclasses.replace(self.train_config(base, dataset), **compression.retrain)

    def train_config(self, technique: str, dataset: str) -> TrainConfig:
        """The technique's recipe with the dataset's overrides applied."""
        base = self.techniques[technique]
        overrides = self.datasets[dataset].overrides.get(technique, {})
        return dataclasses.replace(base, **overrides)

    def floor(self, dataset: str, technique: str) -> float | None:
        """The accuracy a case must reach; None for analyses that train nothing (spectra)."""
        return self.floors[dataset].get(technique)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str, known_techniques: dict[str, str]) -> Profile:
    """Load a profile by name (``smoke``, ``full``) or by path to a TOML file.

    ``known_techniques`` maps each technique the harness implements to its model.
    """
    path = _resolve(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"profile {path} is not valid TOML: {exc}") from None
    return _parse(path.stem, raw, known_techniques, where=str(path))


def _resolve(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml":
        if not candidate.is_file():
            raise ConfigError(f"profile file {candidate} does not exist")
        return candidate
    builtin = PROFILE_DIR / f"{name_or_path}.toml"
    if not builtin.is_file():
        raise ConfigError(
            f"unknown profile {name_or_path!r}: choose one of {available_profiles()} "
            "or give the path to a .toml file"
        )
    return builtin


TOP_LEVEL_TYPES = {"description": str, "device": str, "seed": int, "eval_batch_size": int, "amp": bool,
                   "channels_last": bool, "threads": int}


def type_problems(raw: dict, where: str) -> list[str]:
    """One line per value of the wrong type anywhere in the profile (file, key, expected type),
    found before anything else is checked or run."""
    problems = _table_type_problems(raw, TOP_LEVEL_TYPES, f"{where}: ")
    train_types = typing.get_type_hints(TrainConfig)
    dataset_types = typing.get_type_hints(DatasetConfig)
    for tech, table in _tables(raw.get("techniques")):
        problems += _table_type_problems(table, train_types, f"{where}: techniques.{tech}.")
    problems += _table_type_problems(raw.get("pretext", {}), {**train_types, "train_size": int}, f"{where}: pretext.")
    for name, table in _tables(raw.get("datasets")):
        here = f"{where}: datasets.{name}"
        problems += _table_type_problems(table, dataset_types, f"{here}.")
        for tech, overrides in _tables(table.get("overrides")):
            problems += _table_type_problems(overrides, train_types, f"{here}.overrides.{tech}.")
    for name, table in _tables(raw.get("compression")):
        problems += _table_type_problems(table, train_types, f"{where}: compression.{name}.")
    return problems


def _tables(value: Any) -> list[tuple[str, dict]]:
    return [(k, v) for k, v in value.items() if isinstance(v, dict)] if isinstance(value, dict) else []


def _table_type_problems(table: Any, types_by_key: dict[str, Any], prefix: str) -> list[str]:
    if not isinstance(table, dict):
        return []
    return [f"{prefix}{key} is {value!r}; expected {_type_name(types_by_key[key])}"
            for key, value in table.items() if key in types_by_key and not _has_type(value, types_by_key[key])]


def _has_type(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_has_type(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) is tuple:
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    if typing.get_origin(hint) is dict:
        return isinstance(value, dict)
    return True


def _type_name(hint: Any) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(option) for option in typing.get_args(hint) if option is not type(None))
    if typing.get_origin(hint) is tuple:
        return "a list of strings"
    if typing.get_origin(hint) is dict:
        return "a table"
    return names.get(hint, str(hint))


def _parse(name: str, raw: dict, known_techniques: dict[str, str], where: str) -> Profile:
    problems = type_problems(raw, where)
    if problems:
        raise ConfigError("\n".join(problems))
    _check_keys(raw, {"description", "device", "seed", "eval_batch_size", "amp", "channels_last", "threads", "datasets",
                      "weights", "techniques", "floors", "pretext", "gate", "compression",
                      "deployment", "studies"}, where)
    techniques = {tech: _train_config(cfg, f"{where}: techniques.{tech}")
                  for tech, cfg in _table(raw, "techniques", where).items()}
    for tech in techniques:
        if tech not in known_techniques:
            raise ConfigError(f"{where}: unknown technique {tech!r}; known: {sorted(known_techniques)}")
    datasets = {ds: _dataset_config(ds, cfg, techniques, where)
                for ds, cfg in _table(raw, "datasets", where).items()}
    if not datasets or not techniques:
        raise ConfigError(f"{where}: a profile needs at least one dataset and one technique")
    weights = dict(_table(raw, "weights", where))
    for model in sorted(set(known_techniques[t] for t in techniques)):
        if model in PRETRAINABLE_MODELS and model not in weights:
            raise ConfigError(f"{where}: weights.{model} is missing (imagenet, none, pretext or a path)")
        weights.setdefault(model, "none")
    bases, compressions = _compressions(_table(raw, "compression", where), techniques, where)
    compressed_names = [c.technique(b) for b in bases for c in compressions.values()]
    compressed = [c.technique(b) for b in bases for c in compressions.values() if c.name not in UNTRAINED_COMPRESSIONS]
    floors = _floors(_table(raw, "floors", where), datasets, techniques, compressed, where)
    pretext = dict(raw.get("pretext", {}))
    if "pretext" in weights.values():
        if "train_size" not in pretext:
            raise ConfigError(f"{where}: weights use 'pretext', so [pretext] needs train_size and a recipe")
        _train_config({k: v for k, v in pretext.items() if k != "train_size"}, f"{where}: pretext")
    device = raw.get("device", "auto")
    _check_choice(device, ("auto", "cpu", "cuda"), f"{where}: device")
    threads = raw.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"{where}: threads must be a whole number >= 1 (or absent: cores / xdist workers)")
    return Profile(
        name=name,
        description=raw.get("description", ""),
        device=device,
        seed=int(raw.get("seed", 0)),
        eval_batch_size=int(raw.get("eval_batch_size", 256)),
        amp=raw.get("amp", False),
        channels_last=raw.get("channels_last", True),
        threads=threads,
        datasets=datasets,
        weights=weights,
        techniques=techniques,
        floors=floors,
        pretext=pretext,
        gate=_gate_tolerances(_table(raw, "gate", where), where),
        compression_bases=bases,
        compressions=compressions,
        studies=_studies(_table(raw, "studies", where), datasets, where),
        **_deployments(_table(raw, "deployment", where), list(techniques) + compressed_names, where),
    )


def _train_config(cfg: dict, where: str) -> TrainConfig:
    _check_keys(cfg, {f.name for f in dataclasses.fields(TrainConfig)}, where)
    try:
        train = TrainConfig(**cfg)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    train.validate(where)
    return train


def _studies(raw: dict, datasets: dict[str, DatasetConfig], where: str) -> dict[str, dict[str, Any]]:
    """[studies.NAME] parameters (defaults filled in) of every study a dataset runs."""
    for name, table in raw.items():
        if name not in STUDY_PARAMS:
            raise ConfigError(f"{where}: unknown study {name!r} in [studies]; known: {sorted(STUDY_PARAMS)}")
        _check_keys(table, set(STUDY_PARAMS[name]), f"{where}: studies.{name}")
    used = {study for config in datasets.values() for study in config.studies}
    return {name: {**STUDY_PARAMS[name], **raw.get(name, {})} for name in sorted(used)}


def _dataset_config(name: str, cfg: dict, techniques: dict[str, TrainConfig], where: str) -> DatasetConfig:
    here = f"{where}: datasets.{name}"
    _check_keys(cfg, {f.name for f in dataclasses.fields(DatasetConfig)} - {"name"}, here)
    for key in ("source", "native_size", "input_size"):
        if key not in cfg:
            raise ConfigError(f"{here}: missing {key!r}")
    _check_choice(cfg["source"], DATA_SOURCES, f"{here}.source")
    if cfg["source"] == "imagefolder" and not cfg.get("path"):
        raise ConfigError(f"{here}: an imagefolder dataset needs a path")
    cfg = dict(cfg)
    studies = tuple(cfg.pop("studies", ("mobilenet",)))
    for study in studies:
        _check_choice(study, tuple(STUDY_TECHNIQUES), f"{here}.studies")
    overrides = cfg.get("overrides", {})
    for tech, values in overrides.items():
        if tech not in techniques:
            raise ConfigError(f"{here}.overrides: {tech!r} is not a technique of this profile")
        dataclasses.replace(techniques[tech], **values).validate(f"{here}.overrides.{tech}")
    return DatasetConfig(name=name, studies=studies, **cfg)


def _compressions(raw: dict, techniques: dict[str, TrainConfig], where: str):
    """[compression]: ``bases`` (techniques whose models get compressed) and one table per
    compression technique: its parameters plus retraining overrides of the base's recipe."""
    bases = tuple(raw.get("bases", ()))
    for base in bases:
        if base not in techniques:
            raise ConfigError(f"{where}: compression.bases names {base!r}, not a technique of this profile")
    compressions = {}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    for name, table in raw.items():
        if name == "bases":
            continue
        if name not in COMPRESSIONS:
            raise ConfigError(f"{where}: unknown compression technique {name!r}; known: {sorted(COMPRESSIONS)}")
        here = f"{where}: compression.{name}"
        _check_keys(table, set(COMPRESSIONS[name]) | train_keys, here)
        retrain = {k: v for k, v in table.items() if k in train_keys}
        for base in bases:
            dataclasses.replace(techniques[base], **retrain).validate(here)
        params = {**COMPRESSIONS[name], **{k: v for k, v in table.items() if k not in train_keys}}
        compressions[name] = Compression(name, params, retrain)
    if compressions and not bases:
        raise ConfigError(f"{where}: [compression] needs bases = [...] (e.g. [\"full_ft\", \"kd\"])")
    return bases, compressions


def _deployments(raw: dict, models: list[str], where: str) -> dict[str, Any]:
    """[deployment]: ``bases`` (trained or compressed techniques to measure) and one table
    per deployment technique with its parameters."""
    bases = tuple(raw.get("bases", ()))
    unknown = [b for b in bases if b not in models]
    if unknown:
        raise ConfigError(f"{where}: deployment.bases names {unknown}, not techniques of this profile: {models}")
    deployments = {}
    for name, table in raw.items():
        if name == "bases":
            continue
        if name not in DEPLOYMENTS:
            raise ConfigError(f"{where}: unknown deployment technique {name!r}; known: {sorted(DEPLOYMENTS)}")
        _check_keys(table, set(DEPLOYMENTS[name]) | {"bases"}, f"{where}: deployment.{name}")
        outside = [b for b in table.get("bases", ()) if b not in bases]
        if outside:
            raise ConfigError(f"{where}: deployment.{name}.bases {outside} are not in deployment.bases {list(bases)}")
        deployments[name] = {**DEPLOYMENTS[name], **table}
    if deployments and not bases:
        raise ConfigError(f"{where}: [deployment] needs bases = [...] (e.g. [\"full_ft\", \"kd\"])")
    return {"deployment_bases": bases, "deployments": deployments}


def _floors(raw: dict, datasets: dict, techniques: list[str], compressed: list[str],
            where: str) -> dict[str, dict[str, float]]:
    floors = {}
    for ds, config in datasets.items():
        per_dataset = raw.get(ds, {})
        required = [t for t in [*techniques, *(compressed if config.compress else [])]
                    if config.runs(t) and t not in UNFLOORED_TECHNIQUES]
        missing = [t for t in required if t not in per_dataset]
        if missing:
            raise ConfigError(f"{where}: floors.{ds} has no accuracy floor for {missing}")
        floors[ds] = {tech: float(per_dataset[tech]) for tech in required}
    return floors


def _gate_tolerances(raw: dict, where: str) -> Tolerances:
    """[gate]: accuracy_points, cross_cpu_accuracy_points, speedup_ratio, time_ratio, gate_times
    and [gate.per_metric] NAME = tol."""
    _check_keys(raw, {f.name for f in dataclasses.fields(Tolerances)}, f"{where}: gate")
    values = {**raw, "per_metric": dict(raw.get("per_metric", {}))}
    numbers = [v for k, v in values.items() if k not in ("per_metric", "gate_times")]
    numbers += list(values["per_metric"].values())
    if not isinstance(values.get("gate_times", True), bool):
        raise ConfigError(f"{where}: gate.gate_times must be true or false")
    if any(not isinstance(v, (int, float)) or v < 0 for v in numbers):
        raise ConfigError(f"{where}: gate tolerances must be numbers >= 0")
    return Tolerances(**values)


def _table(raw: dict, key: str, where: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a table")
    return value


def _check_keys(cfg: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _check_choice(value: str, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise ConfigError(f"{where} is {value!r}; choose one of {list(choices)}")
