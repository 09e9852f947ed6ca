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
from typing import Any, Mapping, Protocol

from .errors import ConfigError
from .gate import Tolerances
from .models import SOURCES, ModelSpec, check_spec, default_spec


class KnownTechniques(Protocol):
    """What profile loading reads of the technique registry (``registry.Catalogue``): every
    technique (its role, model, study, floored, params) and every study's parameter defaults."""

    techniques: Mapping[str, Any]
    studies: Mapping[str, dict[str, Any]]

    def of_role(self, role: str) -> Mapping[str, Any]: ...

PROFILE_DIR = Path(__file__).parent / "profiles"
DEFAULT_MODELS = ("mobilenet_v2",)  # what a dataset's study fine-tunes when it lists no models
DEFAULT_STUDIES = ("mobilenet", "distillation")  # fine-tuning and distillation, the study's first phase
DATA_SOURCES = ("synthetic", "digits", "cifar10", "stl10", "mnist", "imagefolder")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "onecycle", "cosine", "step")
INPUT_MODES = ("upscaled", "native")
# Which compressions, deployments and studies exist, and their parameters' defaults, come from
# the technique registry (mnv2core/registry.py), handed to load_profile as a catalogue.


@dataclass(frozen=True)
class TrainConfig:
    """How one technique trains. ``input`` picks the dataset's input size or its native size.
    ``bn_recalibration_images`` > 0 re-estimates batch-norm statistics on that many training
    images after the last epoch (precise BN; short runs leave them behind the weights).
    ``size`` > 0 trains at that many px whatever ``input`` says; the ``step`` schedule
    multiplies the lr by ``gamma`` every ``step_epochs`` epochs. ``train_images`` > 0 trains
    on that many training images (a random draw fixed by the seed; 0: all of them)."""

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
    train_images: int = 0
    teacher: str = ""  # distillation: the teacher's and the student's models (the registry's defaults when "")
    student: str = ""

    def validate(self, where: str) -> None:
        _check_choice(self.optimizer, OPTIMIZERS, f"{where}.optimizer")
        _check_choice(self.schedule, SCHEDULES, f"{where}.schedule")
        _check_choice(self.input, INPUT_MODES, f"{where}.input")
        if self.epochs < 0 or self.batch_size < 1:
            raise ConfigError(f"{where}: need epochs >= 0 (0 only where a technique trains nothing) and batch_size >= 1")
        if self.lr <= 0 or self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"{where}: need lr > 0, temperature > 0 and 0 <= alpha <= 1")
        if self.size < 0 or self.step_epochs < 1 or not 0 < self.gamma <= 1 or self.train_images < 0:
            raise ConfigError(f"{where}: need size >= 0, step_epochs >= 1, 0 < gamma <= 1 and train_images >= 0")


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
    studies: tuple[str, ...] = DEFAULT_STUDIES  # the studies whose techniques run on it
    models: tuple[str, ...] = DEFAULT_MODELS  # the models its per-model techniques (fine-tuning...) run on
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def size_for(self, train: TrainConfig) -> int:
        if train.size:
            return train.size
        return self.native_size if train.input == "native" else self.input_size

    def runs(self, study: str) -> bool:
        """Whether this dataset runs the techniques of ``study``."""
        return study in self.studies


@dataclass(frozen=True)
class Compression:
    """One compression technique: its parameters, and the changes its retraining makes to
    the recipe of the model it compresses (the "base")."""

    name: str
    params: dict[str, Any]
    retrain: dict[str, Any]
    bases: tuple[str, ...] = ()  # the bases it compresses ([compression] bases, or its own narrower list)

    def technique(self, base: str) -> str:
        return derived_technique(base, self.name)


def derived_technique(base: str, method: str) -> str:
    """The grid's name for compression or deployment ``method`` applied to the model of ``base``."""
    return f"{base}_{method}"


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
    models: dict[str, ModelSpec]  # every model the profile names, declared ([models.NAME]) or by default
    techniques: dict[str, TrainConfig]
    floors: dict[str, dict[str, Any]]  # dataset -> technique -> floor, or model -> technique -> floor
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
        return [(derived_technique(base, name), base, name, params) for name, params in self.deployments.items()
                for base in params.get("bases", self.deployment_bases)]

    def compressed_cases(self) -> list[tuple[str, str, Compression]]:
        """(technique, base, compression) for every compression of every base."""
        return [(c.technique(base), base, c) for base in self.compression_bases for c in self.compressions.values()
                if base in c.bases]

    def cases(self, dataset: str, catalogue: "KnownTechniques") -> list[tuple[str, str, str, str | None]]:
        """(model, technique, method, base) of every case on ``dataset``: each trained technique
        of a study the dataset runs on its model(s) (a per-model technique on each of the
        dataset's models it applies to), each compression of each base on the base's model,
        each deployment of each base (trained or compressed) on the base's model."""
        config = self.datasets[dataset]
        trained = []
        for tech in self.techniques:
            technique = catalogue.techniques[tech]
            if config.runs(technique.study):
                trained += [(model, tech, tech, None) for model in self.models_of(technique, dataset)]
        compressed = [(model, technique, c.name, base) for technique, base, c in self.compressed_cases()
                      for model, tech, _, _ in trained if tech == base] if config.compress else []
        built = trained + compressed
        deployed = [(model, tech, name, base) for tech, base, name, _ in self.deployment_cases()
                    for model, built_tech, _, _ in built if built_tech == base]
        return built + deployed

    def models_of(self, technique: Any, dataset: str) -> list[str]:
        """The models ``technique`` trains on ``dataset``."""
        if technique.per_model is not None:
            return [m for m in self.datasets[dataset].models if technique.per_model(self.model(m))]
        return [technique.model(self, dataset) if callable(technique.model) else technique.model]

    def retrain_config(self, compression: Compression, base: str, dataset: str) -> TrainConfig:
        return dataclasses.replace(self.train_config(base, dataset), **compression.retrain)

    def train_config(self, technique: str, dataset: str) -> TrainConfig:
        """The technique's recipe with the dataset's overrides applied."""
        base = self.techniques[technique]
        overrides = self.datasets[dataset].overrides.get(technique, {})
        return dataclasses.replace(base, **overrides)

    def floor(self, dataset: str, technique: str, model: str = "") -> float | None:
        """The accuracy a case must reach (``[floors.DATASET.MODEL]`` before
        ``[floors.DATASET]``); None for analyses that train nothing (spectra)."""
        return floor_of(self.floors.get(dataset, {}), model, technique)

    def model(self, name: str) -> ModelSpec:
        return self.models.get(name) or default_spec(name)


def floor_of(floors: dict[str, Any], model: str, technique: str) -> float | None:
    per_model = floors.get(model)
    if isinstance(per_model, dict) and technique in per_model:
        return per_model[technique]
    value = floors.get(technique)
    return None if isinstance(value, dict) else value


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str, catalogue: KnownTechniques) -> Profile:
    """Load a profile by name (``smoke``, ``full``) or by path to a TOML file.

    ``catalogue`` (``techniques.catalogue()``) holds every technique and study the harness
    implements, with their models and parameter defaults.
    """
    path = _resolve(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"profile {path} is not valid TOML: {exc}") from None
    return _parse(path.stem, raw, catalogue, where=str(path))


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


def type_problems(raw: dict, where: str, catalogue: KnownTechniques | None = None) -> list[str]:
    """One line per value of the wrong type or out of range anywhere in the profile (file,
    key, expected type or range), found before anything else is checked or run. Technique and
    study parameters are typed by their registered defaults; their ranges come from the
    technique's ``ranges`` (every number >= 0 otherwise)."""
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
    if catalogue is not None:
        problems += _parameter_problems(raw, where, catalogue)
    return problems


def _parameter_problems(raw: dict, where: str, catalogue: KnownTechniques) -> list[str]:
    """[compression.X], [deployment.X] and [studies.X] values against their defaults' types
    and the technique's ranges."""
    sections = [("compression", catalogue.of_role("compression")), ("deployment", catalogue.of_role("deployment"))]
    problems = []
    for section, known in sections:
        for name, table in _tables(raw.get(section)):
            if name in known:
                problems += _value_problems(table, known[name].params, known[name].ranges, f"{where}: {section}.{name}.",
                                            known[name].choices)
    for name, table in _tables(raw.get("studies")):
        if name in catalogue.studies:
            problems += _value_problems(table, catalogue.studies[name], {}, f"{where}: studies.{name}.")
    return problems


def _value_problems(table: dict, defaults: dict[str, Any], ranges: dict[str, tuple], prefix: str,
                    choices: dict[str, tuple] | None = None) -> list[str]:
    problems = []
    for key, value in table.items():
        if key not in defaults:
            continue  # unknown keys and recipe keys are named elsewhere
        if not _like(value, defaults[key]):
            problems.append(f"{prefix}{key} is {value!r}; expected {_described(defaults[key])}")
            continue
        if key in (choices or {}) and value not in choices[key]:
            problems.append(f"{prefix}{key} is {value!r}; choose one of {list(choices[key])}")
            continue
        low, high = ranges.get(key, (0, None))
        numbers = [v for v in (value if isinstance(value, list) else [value])
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if any(v < low or (high is not None and v > high) for v in numbers):
            problems.append(f"{prefix}{key} is {value!r}; expected "
                            + (f"values between {low} and {high}" if high is not None else f"values >= {low}"))
    return problems


def _like(value: Any, default: Any) -> bool:
    """Whether ``value`` has the type of ``default`` (a whole number where it is one; a number
    where it is a float; a list whose items are like its first item)."""
    if isinstance(default, list):
        return isinstance(value, list) and (not default or all(_like(v, default[0]) for v in value))
    return _has_type(value, type(default))


def _described(default: Any) -> str:
    if isinstance(default, list):
        return f"a list of {PLURALS[type(default[0])]}" if default else "a list"
    return _type_name(type(default))


PLURALS = {bool: "true/false values", int: "whole numbers", float: "numbers", str: "strings"}


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


def _parse(name: str, raw: dict, catalogue: KnownTechniques, where: str) -> Profile:
    problems = type_problems(raw, where, catalogue)
    if problems:
        raise ConfigError("\n".join(problems))
    if "weights" in raw:
        raise ConfigError(f"{where}: [weights] is now per model: write [models.NAME] weights = \"...\" "
                          f"(imagenet, none, pretext or a path) instead")
    _check_keys(raw, {"description", "device", "seed", "eval_batch_size", "amp", "channels_last", "threads", "datasets",
                      "models", "techniques", "floors", "pretext", "gate", "compression",
                      "deployment", "studies"}, where)
    techniques = {tech: _train_config(cfg, f"{where}: techniques.{tech}")
                  for tech, cfg in _table(raw, "techniques", where).items()}
    recipes = {n: t for n, t in catalogue.techniques.items() if t.role in ("trained", "measurement")}
    for tech, cfg in techniques.items():
        if tech not in recipes:
            raise ConfigError(f"{where}: unknown technique {tech!r} in [techniques]; known: {sorted(recipes)}")
        if cfg.epochs < recipes[tech].min_epochs:
            raise ConfigError(f"{where}: techniques.{tech}.epochs must be >= {recipes[tech].min_epochs}")
    datasets = {ds: _dataset_config(ds, cfg, techniques, catalogue, where)
                for ds, cfg in _table(raw, "datasets", where).items()}
    if not datasets or not techniques:
        raise ConfigError(f"{where}: a profile needs at least one dataset and one technique")
    models = _models(_table(raw, "models", where), where)
    bases, compressions = _compressions(_table(raw, "compression", where), techniques, catalogue, where)
    compressed_names = [c.technique(b) for b in bases for c in compressions.values()]
    pretext = dict(raw.get("pretext", {}))
    device = raw.get("device", "auto")
    _check_choice(device, ("auto", "cpu", "cuda"), f"{where}: device")
    threads = raw.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"{where}: threads must be a whole number >= 1 (or absent: cores / xdist workers)")
    profile = Profile(
        name=name,
        description=raw.get("description", ""),
        device=device,
        seed=int(raw.get("seed", 0)),
        eval_batch_size=int(raw.get("eval_batch_size", 256)),
        amp=raw.get("amp", False),
        channels_last=raw.get("channels_last", True),
        threads=threads,
        datasets=datasets,
        models=models,
        techniques=techniques,
        floors=_floor_tables(_table(raw, "floors", where), datasets, where),
        pretext=pretext,
        gate=_gate_tolerances(_table(raw, "gate", where), where),
        compression_bases=bases,
        compressions=compressions,
        studies=_studies(_table(raw, "studies", where), datasets, catalogue, where),
        **_deployments(_table(raw, "deployment", where), list(techniques) + compressed_names, catalogue, where),
    )
    _complete(profile, catalogue, where)
    return profile


def _models(raw: dict, where: str) -> dict[str, ModelSpec]:
    """[models.NAME]: source (torchvision, timm, builtin), arch (default NAME), weights
    (imagenet, none, pretext or a path) and trained."""
    models = {}
    for name, table in raw.items():
        here = f"{where}: models.{name}"
        if not isinstance(table, dict):
            raise ConfigError(f"{here} must be a table (source, arch, weights, trained)")
        _check_keys(table, {"source", "arch", "weights", "trained"}, here)
        problems = _table_type_problems(table, typing.get_type_hints(ModelSpec), f"{here}.")
        if problems:
            raise ConfigError("\n".join(problems))
        values = {"source": default_spec(table.get("arch", name)).source, **table}
        _check_choice(values["source"], SOURCES, f"{here}.source")
        spec = ModelSpec(name, **values)
        try:
            check_spec(spec)
        except ConfigError as exc:
            raise ConfigError(f"{here}: {exc}") from None
        if spec.trained and not spec.pretrained:
            raise ConfigError(f"{here}: trained = true needs weights (a file trained on the dataset)")
        models[name] = spec
    return models


def _complete(profile: Profile, catalogue: KnownTechniques, where: str) -> None:
    """What needs the whole profile: every model it runs is known to its library, every
    floored case has a floor, pretext weights have a recipe."""
    used = set()
    for dataset in profile.datasets:
        cases = profile.cases(dataset, catalogue)
        used |= {model for model, *_ in cases}
        missing = {tech for model, tech, method, _ in cases if catalogue.techniques[method].floored
                   and catalogue.techniques[method].role in ("trained", "compression")
                   and profile.floor(dataset, tech, model) is None}
        if missing:
            raise ConfigError(f"{where}: floors.{dataset} has no accuracy floor for {sorted(missing)} "
                              f"(one for every model, or [floors.{dataset}.MODEL] for one)")
    for name in sorted(used - set(profile.models)):
        try:
            check_spec(profile.model(name))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}; declare it in [models.{name}] (source, arch)") from None
    if any(profile.model(m).weights == "pretext" for m in used):
        if "train_size" not in profile.pretext:
            raise ConfigError(f"{where}: weights use 'pretext', so [pretext] needs train_size and a recipe")
        _train_config({k: v for k, v in profile.pretext.items() if k != "train_size"}, f"{where}: pretext")


def _floor_tables(raw: dict, datasets: dict, where: str) -> dict[str, dict[str, Any]]:
    """[floors.DATASET] technique = floor, and [floors.DATASET.MODEL] for one model's."""
    floors = {}
    for ds, table in raw.items():
        if ds not in datasets:
            raise ConfigError(f"{where}: floors.{ds} names no dataset of this profile: {sorted(datasets)}")
        for key, value in table.items():
            values = value.values() if isinstance(value, dict) else [value]
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in values):
                raise ConfigError(f"{where}: floors.{ds}.{key} must be an accuracy (a number >= 0)")
        floors[ds] = {k: ({m: float(v) for m, v in value.items()} if isinstance(value, dict) else float(value))
                      for k, value in table.items()}
    return floors


def _train_config(cfg: dict, where: str) -> TrainConfig:
    _check_keys(cfg, {f.name for f in dataclasses.fields(TrainConfig)}, where)
    try:
        train = TrainConfig(**cfg)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    train.validate(where)
    return train


def _studies(raw: dict, datasets: dict[str, DatasetConfig], catalogue: KnownTechniques,
             where: str) -> dict[str, dict[str, Any]]:
    """[studies.NAME] parameters (defaults filled in) of every study a dataset runs."""
    defaults = catalogue.studies
    for name, table in raw.items():
        if name not in defaults:
            raise ConfigError(f"{where}: unknown study {name!r} in [studies]; known: {sorted(defaults)}")
        _check_keys(table, set(defaults[name]), f"{where}: studies.{name}")
    used = {study for config in datasets.values() for study in config.studies}
    return {name: {**defaults[name], **raw.get(name, {})} for name in sorted(used)}


def _dataset_config(name: str, cfg: dict, techniques: dict[str, TrainConfig], catalogue: KnownTechniques,
                    where: str) -> DatasetConfig:
    here = f"{where}: datasets.{name}"
    _check_keys(cfg, {f.name for f in dataclasses.fields(DatasetConfig)} - {"name"}, here)
    for key in ("source", "native_size", "input_size"):
        if key not in cfg:
            raise ConfigError(f"{here}: missing {key!r}")
    _check_choice(cfg["source"], DATA_SOURCES, f"{here}.source")
    if cfg["source"] == "imagefolder" and not cfg.get("path"):
        raise ConfigError(f"{here}: an imagefolder dataset needs a path")
    cfg = dict(cfg)
    studies = tuple(cfg.pop("studies", DEFAULT_STUDIES))
    if "models" in cfg:
        cfg["models"] = tuple(cfg["models"])
        if not cfg["models"]:
            raise ConfigError(f"{here}.models is empty: list the models its study runs (e.g. [\"mobilenet_v2\"])")
    for study in studies:
        _check_choice(study, tuple(catalogue.studies), f"{here}.studies")
    overrides = cfg.get("overrides", {})
    for tech, values in overrides.items():
        if tech not in techniques:
            raise ConfigError(f"{here}.overrides: {tech!r} is not a technique of this profile")
        dataclasses.replace(techniques[tech], **values).validate(f"{here}.overrides.{tech}")
    return DatasetConfig(name=name, studies=studies, **cfg)


def _compressions(raw: dict, techniques: dict[str, TrainConfig], catalogue: KnownTechniques, where: str):
    """[compression]: ``bases`` (techniques whose models get compressed) and one table per
    compression technique: its parameters plus retraining overrides of the base's recipe."""
    bases = tuple(raw.get("bases", ()))
    for base in bases:
        if base not in techniques:
            raise ConfigError(f"{where}: compression.bases names {base!r}, not a technique of this profile")
    compressions = {}
    known = {n: t.params for n, t in catalogue.of_role("compression").items()}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    for name, table in raw.items():
        if name == "bases":
            continue
        if name not in known:
            raise ConfigError(f"{where}: unknown compression technique {name!r}; known: {sorted(known)}")
        here = f"{where}: compression.{name}"
        _check_keys(table, set(known[name]) | train_keys | {"bases"}, here)
        own_bases = tuple(table.get("bases", bases))
        outside = [b for b in own_bases if b not in bases]
        if outside:
            raise ConfigError(f"{here}.bases {outside} are not in compression.bases {list(bases)}")
        retrain = {k: v for k, v in table.items() if k in train_keys}
        for base in bases:
            dataclasses.replace(techniques[base], **retrain).validate(here)
        params = {**known[name], **{k: v for k, v in table.items() if k not in train_keys and k != "bases"}}
        compressions[name] = Compression(name, params, retrain, own_bases)
    if compressions and not bases:
        raise ConfigError(f"{where}: [compression] needs bases = [...] (e.g. [\"full_ft\", \"kd\"])")
    for name, compression in compressions.items():
        for need in catalogue.techniques[name].needs:
            lacking = [b for b in compression.bases if need not in compressions or b not in compressions[need].bases]
            if lacking:
                raise ConfigError(f"{where}: compression.{name} of {lacking} needs compression.{need} of them too")
    return bases, compressions


def _deployments(raw: dict, models: list[str], catalogue: KnownTechniques, where: str) -> dict[str, Any]:
    """[deployment]: ``bases`` (trained or compressed techniques to measure) and one table
    per deployment technique with its parameters."""
    bases = tuple(raw.get("bases", ()))
    unknown = [b for b in bases if b not in models]
    if unknown:
        raise ConfigError(f"{where}: deployment.bases names {unknown}, not techniques of this profile: {models}")
    deployments = {}
    known = {n: t.params for n, t in catalogue.of_role("deployment").items()}
    for name, table in raw.items():
        if name == "bases":
            continue
        if name not in known:
            raise ConfigError(f"{where}: unknown deployment technique {name!r}; known: {sorted(known)}")
        _check_keys(table, set(known[name]) | {"bases"}, f"{where}: deployment.{name}")
        outside = [b for b in table.get("bases", ()) if b not in bases]
        if outside:
            raise ConfigError(f"{where}: deployment.{name}.bases {outside} are not in deployment.bases {list(bases)}")
        deployments[name] = {**known[name], **table}
    if deployments and not bases:
        raise ConfigError(f"{where}: [deployment] needs bases = [...] (e.g. [\"full_ft\", \"kd\"])")
    return {"deployment_bases": bases, "deployments": deployments}


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
