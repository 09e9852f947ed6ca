"""Profiles: the data that says what a run trains, how long, and what it must reach.

A profile is one TOML file in ``mnv2core/profiles/`` (or any path). It holds the datasets,
the weights each model starts from, the training recipe of each technique (with optional
per-dataset overrides) and the accuracy floor each case asserts.
"""
from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, Field
from pydantic.dataclasses import dataclass as schema_dataclass

from .errors import ConfigError
from .gate import Tolerances
from .kernels import KINDS as KERNEL_KINDS
from .models import SOURCES, ModelSpec, check_network, check_spec, default_spec, source_digest
from .onnx_model import file_digest
from .roles import Role
from .schema import STRICT, Names, NonNegative, Positive, fields_of, parameters_schema, problems, validated


class KnownTechniques(Protocol):
    """What profile loading reads of the technique registry (``registry.Catalogue``): every
    technique (its role, model, study, floored, params) and every study's parameter defaults."""

    techniques: Mapping[str, Any]
    studies: Mapping[str, dict[str, Any]]

    def of_role(self, role: Role) -> Mapping[str, Any]: ...

PROFILE_DIR = Path(__file__).parent / "profiles"
MAX_SIDE = 1024  # px: an image side the harness takes (a batch of 1024 px images already fills GBs)
Side = Annotated[int, Field(gt=0, le=MAX_SIDE)]
DEFAULT_MODELS = ("mobilenet_v2",)  # what a dataset's study fine-tunes when it lists no models
DEFAULT_STUDIES = ("mobilenet", "distillation")  # fine-tuning and distillation, the study's first phase
DATA_SOURCES = ("synthetic", "digits", "cifar10", "stl10", "mnist", "imagefolder")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "onecycle", "cosine", "step")
INPUT_MODES = ("upscaled", "native")
# Which compressions, deployments and studies exist, and their parameters' defaults, come from
# the technique registry (mnv2core/registry.py), handed to load_profile as a catalogue.


Fraction = Annotated[float, Field(ge=0, le=1)]


@schema_dataclass(frozen=True, config=STRICT)
class TrainConfig:
    """How one technique trains. ``input`` picks the dataset's input size or its native size.
    ``bn_recalibration_images`` > 0 re-estimates batch-norm statistics on that many training
    images after the last epoch (precise BN; short runs leave them behind the weights).
    ``size`` > 0 trains at that many px whatever ``input`` says; the ``step`` schedule
    multiplies the lr by ``gamma`` every ``step_epochs`` epochs. ``train_images`` > 0 trains
    on that many training images (a random draw fixed by the seed; 0: all of them).
    ``validation_fraction`` > 0 holds that share of every class of the training images out as
    a validation split: the start and every epoch are scored on it and the best of them is
    the model kept (the test split selects nothing). ``warmup_epochs`` > 0 raises the lr
    linearly from a hundredth over that many epochs before the schedule runs; ``bn_frozen``
    keeps the batch-norm statistics the model starts with (a gentle first unfrozen epoch)."""

    epochs: NonNegative  # 0 only where a technique trains nothing (its min_epochs says)
    batch_size: Positive
    optimizer: Literal[OPTIMIZERS] = "adam"
    lr: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    momentum: Fraction = 0.9
    schedule: Literal[SCHEDULES] = "constant"
    augment: bool = True
    input: Literal[INPUT_MODES] = "upscaled"
    temperature: Annotated[float, Field(gt=0)] = 4.0
    alpha: Fraction = 0.9
    bn_recalibration_images: NonNegative = 0
    size: Annotated[int, Field(ge=0, le=MAX_SIDE)] = 0
    step_epochs: Positive = 1
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    train_images: NonNegative = 0
    validation_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.0
    warmup_epochs: NonNegative = 0
    bn_frozen: bool = False
    teacher: str = ""  # distillation: the teacher's and the student's models (the registry's defaults when "")
    student: str = ""


@schema_dataclass(frozen=True, config=STRICT)
class DatasetConfig:
    """One dataset of the grid. ``native_size`` is the stored resolution; ``input_size``
    the resolution models see (larger means upscaled)."""

    name: str
    source: Literal[DATA_SOURCES]
    native_size: Side
    input_size: Side
    path: str | None = None
    train_size: Positive | None = None
    test_size: Positive | None = None
    note: str = ""
    stand_in: bool = False
    compress: bool = True  # run the profile's compression techniques on this dataset
    studies: Names = DEFAULT_STUDIES  # the studies whose techniques run on it
    # the models its per-model techniques (fine-tuning...) run on
    models: Annotated[tuple[str, ...], Field(strict=False, min_length=1)] = DEFAULT_MODELS
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    classes: Annotated[int, Field(ge=2)] | None = None  # the class count its data must have (None: any)

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
    kernels: str = "native"  # or "portable": the same AVX2 math kernels on every x86-64 CPU (mnv2core.kernels)

    def deployment_cases(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(technique, base, deployment, params) for every deployment of every base (a
        technique's own ``bases`` narrow the table's; its ``models`` and ``datasets``, where it runs)."""
        return [(derived_technique(base, name), base, name, params) for name, params in self.deployments.items()
                for base in params.get("bases", self.deployment_bases)]

    def deploys(self, name: str, dataset: str, model: str, base: str) -> bool:
        """Whether deployment ``name`` runs on ``model``'s ``base`` on ``dataset`` (its table's
        ``bases``, ``models`` and ``datasets``), given that base is in the grid."""
        params = self.deployments.get(name)
        return (params is not None and base in params.get("bases", self.deployment_bases)
                and dataset in params.get("datasets", (dataset,)) and model in params.get("models", (model,)))

    def compressed_cases(self) -> list[tuple[str, str, Compression]]:
        """(technique, base, compression) for every compression of every base."""
        return [(c.technique(base), base, c) for base in self.compression_bases for c in self.compressions.values()
                if base in c.bases]

    def cases(self, dataset: str, catalogue: KnownTechniques) -> list[tuple[str, str, str, str | None]]:
        """(model, technique, method, base) of every case on ``dataset``: each trained technique
        of a study the dataset runs on its model(s) (a per-model technique on each of the
        dataset's models it applies to), each compression of each base on the base's model
        (not of a deploy-only one: an ONNX file),
        each deployment of each base (trained or compressed) on the base's model."""
        config = self.datasets[dataset]
        trained = []
        for tech in self.techniques:
            technique = catalogue.techniques[tech]
            if config.runs(technique.study):
                trained += [(model, tech, tech, None) for model in self.models_of(technique, dataset)]
        compressed = [(model, technique, c.name, base) for technique, base, c in self.compressed_cases()
                      for model, tech, _, _ in trained if tech == base and not self.model(model).deploy_only
                      ] if config.compress else []
        built = trained + compressed
        deployed = [(model, tech, name, base) for tech, base, name, _ in self.deployment_cases()
                    for model, built_tech, _, _ in built
                    if built_tech == base and self.deploys(name, dataset, model, base)]
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
    return _parse(path.stem, _read_raw(path, ()), catalogue, where=str(path))


def _read_raw(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The profile's tables, those of the profile it ``extends`` (a builtin name, or a path
    relative to it) merged under its own: tables merge key by key; a value, array included,
    replaces the one it overrides. A python model's file, or an onnx model's, is made absolute
    against the folder of the profile that names it."""
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"profile {path} is not valid TOML: {exc}") from None
    for table in raw.get("models", {}).values():
        if isinstance(table, dict) and table.get("source") == "python" and isinstance(table.get("arch"), str):
            where, sep, name = table["arch"].rpartition(":")
            if sep and where.endswith(".py") and not Path(where).is_absolute():
                table["arch"] = f"{(path.parent / where).resolve()}:{name}"
        if isinstance(table, dict) and table.get("source") == "onnx" and isinstance(table.get("arch"), str):
            table["arch"] = str((path.parent / table["arch"]).resolve())
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends = {base!r}; give a builtin profile's name or a .toml path")
    relative = path.parent / base
    base_path = _resolve(str(relative) if base.endswith(".toml") and relative.is_file() else base)
    chain = (*chain, path.resolve())
    if base_path.resolve() in chain:
        cycle = " -> ".join(p.name for p in (*chain, base_path.resolve()))
        raise ConfigError(f"{path}: extends makes a cycle ({cycle}): break it")
    return _merged(_read_raw(base_path, chain), raw)


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (_merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict)
                       else value)
    return merged


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


class ProfileFile(BaseModel):
    """A profile's top level: its settings and its tables (each checked by its own schema)."""

    model_config = STRICT
    description: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    eval_batch_size: Positive = 256
    amp: bool = False
    channels_last: bool = True
    kernels: Literal[KERNEL_KINDS] = "native"
    threads: Annotated[int, Field(ge=1)] | None = None  # absent: cores / xdist workers
    datasets: dict[str, dict[str, Any]] = {}
    models: dict[str, dict[str, Any]] = {}
    techniques: dict[str, dict[str, Any]] = {}
    floors: dict[str, dict[str, Any]] = {}
    pretext: dict[str, Any] = {}
    gate: dict[str, Any] = {}
    compression: dict[str, Any] = {}
    deployment: dict[str, Any] = {}
    studies: dict[str, dict[str, Any]] = {}


class ModelTable(BaseModel):
    """[models.NAME]: the library (default: builtin when the harness has the network, else
    torchvision), the architecture's name there (default NAME), the starting weights
    (imagenet, none, pretext or a state-dict path) and whether they are trained for the dataset."""

    model_config = STRICT
    source: Literal[SOURCES] | None = None
    arch: str | None = None
    weights: str = "none"
    trained: bool = False
    pretrained_cfg: str | None = None  # timm: the architecture whose config (mean, std) the weights come with
    # python: arch = "package.module:callable" or "path/file.py:callable" (relative to the profile),
    # called as callable(num_classes, **kwargs); mean and std of its inputs; its classifier module.
    # onnx: arch = "path/model.onnx" (relative to the profile), deployed as it is; mean and std
    kwargs: dict[str, Any] = {}
    mean: list[float] | None = None
    std: list[float] | None = None
    head: str | None = None
    # a weights file that wraps its state dict, or whose keys carry a prefix (DataParallel: "module.")
    checkpoint_key: str | None = None
    strip_prefix: str | None = None


TRAIN_KEYS = frozenset(fields_of(TrainConfig))


def table_problems(raw: dict, where: str, catalogue: KnownTechniques) -> list[str]:
    """One line per value of the wrong type or out of range anywhere in the profile (file,
    key, value, what was expected), found before anything else is checked or run. Technique
    and study parameters are typed by their registered defaults and ranged by the technique's
    ``ranges`` (every number >= 0 otherwise)."""
    found = problems(ProfileFile, raw, f"{where}: ")
    if found:
        return found  # tables that are not tables: nothing inside them can be read
    recipes = raw.get("techniques", {})
    for tech, table in recipes.items():
        found += problems(TrainConfig, table, f"{where}: techniques.{tech}.")
    for name, table in raw.get("datasets", {}).items():
        here = f"{where}: datasets.{name}"
        found += problems(DatasetConfig, {"name": name, **table}, f"{here}.")
        for tech, values in (table.get("overrides") or {}).items():
            if isinstance(values, dict) and tech in recipes and not problems(TrainConfig, recipes[tech], ""):
                found += problems(TrainConfig, {**recipes[tech], **values}, f"{here}.overrides.{tech}.")
    for name, table in raw.get("models", {}).items():
        found += problems(ModelTable, table, f"{where}: models.{name}.")
    found += problems(Tolerances, raw.get("gate", {}), f"{where}: gate.")
    bases = {"bases": Names | None}
    for role in (Role.COMPRESSION, Role.DEPLOYMENT):
        section, known = role.section, catalogue.of_role(role)
        for name, table in raw.get(section, {}).items():
            if name in known and isinstance(table, dict):
                technique = known[name]
                own = {k: Any for k in TRAIN_KEYS} if role.retrains else {"models": Names | None,
                                                                            "datasets": Names | None}
                schema = technique.params.with_keys(f"{section}.{name}", {**bases, **own})
                found += problems(schema, table, f"{where}: {section}.{name}.")
    for name, table in raw.get("studies", {}).items():
        if name in catalogue.studies:
            found += problems(parameters_schema(f"studies.{name}", catalogue.studies[name]), table,
                              f"{where}: studies.{name}.")
    return found


def _parse(name: str, raw: dict, catalogue: KnownTechniques, where: str) -> Profile:
    if "weights" in raw:
        raise ConfigError(f"{where}: [weights] is now per model: write [models.NAME] weights = \"...\" "
                          f"(imagenet, none, pretext or a path) instead")
    found = table_problems(raw, where, catalogue)
    if found:
        raise ConfigError("\n".join(found))
    top = ProfileFile(**raw)
    techniques = {tech: _train_config(cfg, f"{where}: techniques.{tech}") for tech, cfg in top.techniques.items()}
    recipes = {n: t for n, t in catalogue.techniques.items() if t.role.has_recipe}
    for tech, cfg in techniques.items():
        if tech not in recipes:
            raise ConfigError(f"{where}: unknown technique {tech!r} in [techniques]; known: {sorted(recipes)}")
        if cfg.epochs < recipes[tech].min_epochs:
            raise ConfigError(f"{where}: techniques.{tech}.epochs must be >= {recipes[tech].min_epochs}")
    datasets = {ds: _dataset_config(ds, cfg, techniques, catalogue, where) for ds, cfg in top.datasets.items()}
    if not datasets or not techniques:
        raise ConfigError(f"{where}: a profile needs at least one dataset and one technique")
    bases, compressions = _compressions(top.compression, techniques, catalogue, where)
    compressed_names = [c.technique(b) for b in bases for c in compressions.values()]
    profile = Profile(
        name=name,
        description=top.description,
        device=top.device,
        seed=top.seed,
        eval_batch_size=top.eval_batch_size,
        amp=top.amp,
        channels_last=top.channels_last,
        kernels=top.kernels,
        threads=top.threads,
        datasets=datasets,
        models=_models(top.models, where),
        techniques=techniques,
        floors=_floor_tables(top.floors, datasets, where),
        pretext=dict(top.pretext),
        gate=Tolerances(**top.gate),
        compression_bases=bases,
        compressions=compressions,
        studies=_studies(top.studies, datasets, catalogue, where),
        **_deployments(top.deployment, list(techniques) + compressed_names, catalogue, where),
    )
    _complete(profile, catalogue, where)
    return profile


def _models(raw: dict, where: str) -> dict[str, ModelSpec]:
    """[models.NAME]: source (torchvision, timm, builtin), arch (default NAME), weights
    (imagenet, none, pretext or a path) and trained."""
    models = {}
    for name, table in raw.items():
        here = f"{where}: models.{name}"
        values = {"source": default_spec(table.get("arch", name)).source,
                  **{k: v for k, v in table.items() if v is not None}}
        try:
            spec = model_spec(name, values)
        except ConfigError as exc:
            raise ConfigError(f"{here}: {exc}") from None
        if spec.trained and not spec.pretrained:
            raise ConfigError(f"{here}: trained = true needs weights (a file trained on the dataset)")
        models[name] = spec
    return models


def model_spec(name: str, values: dict[str, Any]) -> ModelSpec:
    """A checked spec; a python model's carries its source file's digest, an onnx model's its
    file's."""
    spec = ModelSpec(name, **values)
    check_spec(spec)
    if spec.source == "python":
        spec = dataclasses.replace(spec, code=source_digest(spec.arch, name))
        check_network(spec)
    if spec.source == "onnx":
        spec = dataclasses.replace(spec, code=file_digest(Path(spec.arch)))
    return spec


def add_model(profile: Profile, text: str, catalogue: KnownTechniques) -> Profile:
    """``--model NAME=SOURCE:SPEC`` (``lite1=timm:efficientnet_lite1``,
    ``mine=python:models/net.py:Net``): ``profile`` with one more model, trained on every
    dataset of the fine-tuning study (not the companion studies' own networks); its weights
    come through ``--weights NAME=PATH``; its floors are reported, not asserted."""
    name, sep, rest = text.partition("=")
    source, _, arch = rest.partition(":")
    if not sep or not name.isidentifier() or not arch:
        raise ConfigError(f"bad --model {text!r}: give NAME=SOURCE:SPEC, e.g. lite1=timm:efficientnet_lite1 or "
                          f"mine=python:path/to/net.py:Net or mine=onnx:path/to/model.onnx (weights: --weights "
                          f"NAME=PATH)")
    if source not in SOURCES:
        raise ConfigError(f"--model {text!r}: source {source!r}; choose one of {list(SOURCES)}")
    if name in profile.models:
        raise ConfigError(f"--model {text!r}: profile {profile.name!r} declares a model {name!r} already")
    studied = [d for d in profile.datasets.values() if "mobilenet" in d.studies]
    if not studied:
        raise ConfigError(f"--model {text!r}: profile {profile.name!r} has no dataset running the fine-tuning study")
    try:
        spec = model_spec(name, {"source": source, "arch": arch})
    except ConfigError as exc:
        raise ConfigError(f"--model {text!r}: {exc}") from None
    datasets = {key: dataclasses.replace(d, models=(*d.models, name)) if d in studied else d
                for key, d in profile.datasets.items()}
    grown = dataclasses.replace(profile, models={**profile.models, name: spec}, datasets=datasets)
    floors = {key: {**profile.floors.get(key, {}), name: dict.fromkeys(
        {tech for model, tech, *_ in grown.cases(key, catalogue) if model == name})} for key in datasets}
    return dataclasses.replace(grown, floors=floors)


def _complete(profile: Profile, catalogue: KnownTechniques, where: str) -> None:
    """What needs the whole profile: every model it runs is known to its library, every
    floored case has a floor, pretext weights have a recipe."""
    used = set()
    for dataset in profile.datasets:
        cases = profile.cases(dataset, catalogue)
        used |= {model for model, *_ in cases}
        missing = {tech for model, tech, method, _ in cases if catalogue.techniques[method].floored
                   and catalogue.techniques[method].role.has_model
                   and profile.floor(dataset, tech, model) is None}
        if missing:
            raise ConfigError(f"{where}: floors.{dataset} has no accuracy floor for {sorted(missing)} "
                              f"(one for every model, or [floors.{dataset}.MODEL] for one)")
    for name, params in profile.deployments.items():
        for key, known in (("models", used), ("datasets", set(profile.datasets))):
            unknown = sorted(set(params.get(key, ())) - known)
            if unknown:
                raise ConfigError(f"{where}: deployment.{name}.{key} names {unknown}, not one of this profile's "
                                  f"{key}: {sorted(known)}")
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
    return validated(TrainConfig, cfg, f"{where}.")


def _retrained(recipe: TrainConfig, changes: dict, where: str) -> TrainConfig:
    """``recipe`` with ``changes`` (a dataset's overrides, a compression's retraining), checked."""
    return _train_config({**dataclasses.asdict(recipe), **changes}, where)


def _studies(raw: dict, datasets: dict[str, DatasetConfig], catalogue: KnownTechniques,
             where: str) -> dict[str, dict[str, Any]]:
    """[studies.NAME] parameters (defaults filled in) of every study a dataset runs."""
    defaults = catalogue.studies
    for name in raw:
        if name not in defaults:
            raise ConfigError(f"{where}: unknown study {name!r} in [studies]; known: {sorted(defaults)}")
    used = {study for config in datasets.values() for study in config.studies}
    return {name: {**defaults[name], **raw.get(name, {})} for name in sorted(used)}


def _dataset_config(name: str, cfg: dict, techniques: dict[str, TrainConfig], catalogue: KnownTechniques,
                    where: str) -> DatasetConfig:
    here = f"{where}: datasets.{name}"
    config = DatasetConfig(name=name, **cfg)
    if config.source == "imagefolder" and not config.path:
        raise ConfigError(f"{here}: an imagefolder dataset needs a path")
    for study in config.studies:
        _check_choice(study, tuple(catalogue.studies), f"{here}.studies")
    for tech, values in config.overrides.items():
        if tech not in techniques:
            raise ConfigError(f"{here}.overrides: {tech!r} is not a technique of this profile")
        _retrained(techniques[tech], values, f"{here}.overrides.{tech}")
    return config


def _compressions(raw: dict, techniques: dict[str, TrainConfig], catalogue: KnownTechniques, where: str):
    """[compression]: ``bases`` (techniques whose models get compressed) and one table per
    compression technique: its parameters plus retraining overrides of the base's recipe."""
    bases = tuple(raw.get("bases", ()))
    for base in bases:
        if base not in techniques:
            raise ConfigError(f"{where}: compression.bases names {base!r}, not a technique of this profile")
    compressions = {}
    known = {n: t.params.defaults() for n, t in catalogue.of_role(Role.COMPRESSION).items()}
    for name, table in raw.items():
        if name == "bases":
            continue
        if name not in known:
            raise ConfigError(f"{where}: unknown compression technique {name!r}; known: {sorted(known)}")
        here = f"{where}: compression.{name}"
        own_bases = tuple(table.get("bases", bases))
        outside = [b for b in own_bases if b not in bases]
        if outside:
            raise ConfigError(f"{here}.bases {outside} are not in compression.bases {list(bases)}")
        retrain = {k: v for k, v in table.items() if k in TRAIN_KEYS}
        for base in bases:
            _retrained(techniques[base], retrain, here)
        params = {**known[name], **{k: v for k, v in table.items() if k not in TRAIN_KEYS and k != "bases"}}
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
    per deployment technique with its parameters; a table's own ``bases`` may name any of the
    profile's techniques (e.g. a companion study's network, explained but not deployed)."""
    bases = tuple(raw.get("bases", ()))
    unknown = [b for b in bases if b not in models]
    if unknown:
        raise ConfigError(f"{where}: deployment.bases names {unknown}, not techniques of this profile: {models}")
    deployments = {}
    known = {n: t.params.defaults() for n, t in catalogue.of_role(Role.DEPLOYMENT).items()}
    for name, table in raw.items():
        if name == "bases":
            continue
        if name not in known:
            raise ConfigError(f"{where}: unknown deployment technique {name!r}; known: {sorted(known)}")
        outside = [b for b in table.get("bases", ()) if b not in models]  # its own may reach past [deployment]'s
        if outside:
            raise ConfigError(f"{where}: deployment.{name}.bases names {outside}, not techniques of this profile: "
                              f"{models}")
        deployments[name] = {**known[name], **table}
    if deployments and not bases:
        raise ConfigError(f"{where}: [deployment] needs bases = [...] (e.g. [\"full_ft\", \"kd\"])")
    return {"deployment_bases": bases, "deployments": deployments}


def _check_choice(value: str, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise ConfigError(f"{where} is {value!r}; choose one of {list(choices)}")
