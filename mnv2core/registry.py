"""The technique registry: every technique is declared once, in its own module under
``mnv2core/techniques/``, with its model, study, role, upstream techniques, how it is built
or measured, its checks and its report table. Profiles, the grid, the study, the pytest
plugin and the report all read it (``techniques.catalogue()`` imports every technique
module); adding a technique is one new module plus profile lines."""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .context import Artifact, Builder, Case, Context
from .errors import ConfigError
from .metrics import RECORD, TEST_ACCURACY, Declarations, Metric
from .roles import Role
from .schema import Parameters

TRAINED, COMPRESSION, DEPLOYMENT, MEASUREMENT = Role.TRAINED, Role.COMPRESSION, Role.DEPLOYMENT, Role.MEASUREMENT

Subject = Callable[[Context, Case], Artifact]
Measurer = Callable[[Context, Case, Artifact], dict[str, Any]]
Checker = Callable[[dict[str, Any], Case], None]
Found = list[tuple[str, dict]]  # (label: model and base, metrics) of a technique's cases
Rows = Callable[[Found], list[dict]]


@dataclass(frozen=True)
class Table:
    """A report table over the cases of ``techniques`` on one dataset: ``rows`` receives
    technique -> its cases' (label, metrics)."""

    title: str
    techniques: tuple[str, ...]
    rows: Callable[[dict[str, Found]], list[dict]]


@dataclass(frozen=True)
class Analysis:
    """Sentences a technique's module writes from its cases' numbers (technique -> cases, as
    for a Table); ``across_datasets``: once per report over every dataset (labels then start
    with the dataset), else once per dataset."""

    techniques: tuple[str, ...]
    text: Callable[[dict[str, Found]], str]
    across_datasets: bool = False


class CheckFailed(AssertionError):
    """A case's metrics break what its technique guarantees."""


def require(condition: bool, message: str) -> None:
    """A technique's check (not an ``assert``: checks must hold under ``python -O`` too)."""
    if not condition:
        raise CheckFailed(message)


@dataclass(frozen=True)
class Technique:
    """One technique. ``builder`` keys and builds its model (trained and compression roles;
    the study caches it); ``subject`` makes the uncached model a measurement times;
    ``measure`` adds metrics of this run (for deployments and measurements, every metric,
    ``accuracy`` first when there is one). ``needs`` lists the
    techniques on the same dataset it waits for (a base is implied for compressions and
    deployments). How its cases show in the report is its ``Presentation`` (``present``)."""

    name: str
    role: Role
    title: str
    study: str = "mobilenet"  # the study it belongs to (a dataset lists the studies it runs)
    # the model it trains: a name, (profile, dataset) -> name (a recipe may choose it), or None:
    # its base's model (compressions, deployments) or each of the dataset's models (per_model)
    model: str | Callable[[Any, str], str] | None = None
    # runs on each of the dataset's models (``models = [...]``) for which this returns True
    per_model: Callable[[Any], bool] | None = None
    min_epochs: int = 1  # 0: its recipe may train nothing (a ready-trained model scored as it is)
    builder: Builder | None = None
    subject: Subject | None = None
    measure: Measurer | None = None
    check: Checker | None = None
    params: type[Parameters] = Parameters  # its profile table's keys: types, bounds, choices, defaults
    needs: tuple[str, ...] = ()  # upstream methods, named relative to the base ("prune": the base's prune)
    floored: bool = True  # whether its cases assert an accuracy floor
    starts_early: bool = False  # a long training other cases wait for: scheduled first
    metrics: tuple[Metric, ...] = ()  # what its records hold beyond every record's fields (metrics.RECORD)
    thresholds: tuple[str, ...] = ()  # parameters only its check reads (they change no number)
    uses: tuple[str, ...] = ()  # other techniques whose parameters its metrics depend on
    # its metrics depend only on the model, the data and its parameters (no timing): the cache
    # keeps them, so a rerun does not measure the same model again (--refresh does)
    reusable: bool = False
    # what of this machine its cached metrics also depend on (a runtime's kernel choice): in their key
    machine: Callable[[], dict[str, Any]] | None = None
    # how a compressed model of this technique retrains: (context, dataset) -> strategy;
    # None: every parameter against the labels (distillation keeps distilling)
    retrain: Callable[[Context, str], Callable] | None = None
    module: str = ""  # the module that declares it (its code's fingerprint keys what it caches)
    # runs on a deploy-only model (an ONNX file: no PyTorch graph, weights or gradients); the
    # other techniques' cases of such a model are skipped, saying why
    takes_onnx: bool = False

    def __post_init__(self):
        if not isinstance(self.role, Role):
            raise ValueError(f"technique {self.name}: role {self.role!r} is not one of {[str(r) for r in Role]}")
        if self.role.has_recipe and not (self.model or self.per_model):
            raise ValueError(f"technique {self.name}: a {self.role} technique names its model (or per_model)")
        if self.role.has_model and self.builder is None:
            raise ValueError(f"technique {self.name}: a {self.role} technique needs a builder")
        if self.role.measures_its_own and self.subject is None:
            raise ValueError(f"technique {self.name}: a measurement makes the (uncached) model it measures")
        if not self.role.has_model and self.measure is None:
            raise ValueError(f"technique {self.name}: a {self.role} technique needs measure")


@dataclass(frozen=True)
class Presentation:
    """How a technique's cases show in the report and on the results page, registered beside
    the technique (``present``), not in it."""

    table: tuple[str, Rows] | None = None  # (title, rows from [(label, metrics)]) in the report
    summary_row: str | None = None  # a trained technique: its row title in the study summary table
    summary_column: tuple[str, str] | None = None  # a derived one: (column title, metric) there
    # the results page's figure of its cases on a dataset: (cases, path, dataset) -> the PNG or None
    page_plot: Callable[[Found, Any, str], Any] | None = None


@dataclass
class Catalogue:
    techniques: dict[str, Technique] = field(default_factory=dict)
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)  # study -> [studies.NAME] defaults
    tables: list[Table] = field(default_factory=list)  # report tables, in declaration order
    analyses: list[Analysis] = field(default_factory=list)
    presentations: dict[str, Presentation] = field(default_factory=dict)

    def get(self, name: str) -> Technique:
        if name not in self.techniques:
            raise ConfigError(f"unknown technique {name!r}; known: {sorted(self.techniques)}")
        return self.techniques[name]

    def presentation(self, name: str) -> Presentation:
        return self.presentations.get(name, Presentation())

    def declarations(self, name: str) -> Declarations:
        """The metrics a record of technique ``name`` may hold."""
        technique = self.get(name)
        implied = TEST_ACCURACY if technique.role.has_model else ()
        return Declarations(name, (*technique.metrics, *implied, *RECORD))

    def of_role(self, role: Role) -> dict[str, Technique]:
        return {name: t for name, t in self.techniques.items() if t.role == role}

    def study_techniques(self, study: str) -> tuple[str, ...]:
        return tuple(name for name, t in self.techniques.items() if t.study == study and t.role.has_recipe)


REGISTERED = Catalogue()  # filled by the technique modules as they are imported


def register(technique: Technique) -> Technique:
    if technique.name in REGISTERED.techniques:
        raise ValueError(f"technique {technique.name!r} is registered twice")
    if not technique.module:
        technique = dataclasses.replace(technique, module=sys._getframe(1).f_globals["__name__"])
    REGISTERED.techniques[technique.name] = technique
    return technique


def present(name: str, **how: Any) -> Presentation:
    """Register how technique ``name``'s cases show (``Presentation``'s fields); its table
    takes its place among the report's tables in the order they are registered."""
    presentation = Presentation(**how)
    REGISTERED.presentations[name] = presentation
    if presentation.table:
        title, rows = presentation.table
        REGISTERED.tables.append(Table(title, (name,), lambda found: rows(found[name])))
    return presentation


def only(found: dict[str, Found], technique: str) -> dict:
    """The metrics of a technique's one case on the dataset ({} when it did not run): for the
    companion studies, whose techniques run once per dataset."""
    cases = found.get(technique) or []
    return cases[0][1] if cases else {}


def register_table(table: Table) -> None:
    REGISTERED.tables.append(table)


def register_analysis(analysis: Analysis) -> None:
    REGISTERED.analyses.append(analysis)


def register_study(name: str, params: dict[str, Any] | None = None) -> None:
    """A study a dataset can list (``studies = [...]``) and its parameter defaults."""
    REGISTERED.studies.setdefault(name, dict(params or {}))
