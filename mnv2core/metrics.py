"""Metrics declared once. Each technique lists the metrics its records carry (``Technique.
metrics``): unit, which way is better, whether the regression gate compares it and with which
tolerance, and the deployment runtime it is of. The gate, the report and the results page
read these declarations (never a metric's name), and a record holding a metric its technique
does not declare fails its case."""
from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

HIGHER, LOWER = "higher", "lower"
TOLERANCES = ("accuracy", "ratio", "time")  # accuracy points; relative change; relative, machine-bound
# runtime -> bytes per weight
RUNTIMES = {"eager fp32": 4, "FX int8": 1, "ORT fp32": 4, "ORT int8": 1, "compiled fp32": 4, "PT2E int8": 1,
            "eager bf16": 2, "compiled bf16": 2, "OpenVINO fp32": 4, "OpenVINO int8": 1}


@dataclass(frozen=True)
class Metric:
    """``name``: the key in a record's metrics, dotted into a nested table ("latency.x_ms");
    ``*`` matches any run of characters (a family: "latency.*_ms"). ``better`` None: a
    setting or a description, never gated."""

    name: str
    unit: str  # fraction, ms, x, images/s, s, px, count, bytes, png, text, list, ...
    better: str | None = None
    gated: bool = False
    tolerance: str | None = None  # which of the gate's tolerances applies (TOLERANCES)
    runtime: str | None = None  # the deployment runtime it measures (RUNTIMES), for the deploy table
    on_page: bool = False  # a figure the results page shows (a png)
    doc: str = ""

    def __post_init__(self):
        if self.better not in (HIGHER, LOWER, None):
            raise ValueError(f"metric {self.name}: better is {HIGHER!r}, {LOWER!r} or None, not {self.better!r}")
        if self.gated and (self.better is None or self.tolerance not in TOLERANCES):
            raise ValueError(f"metric {self.name}: a gated metric says which way is better and its tolerance "
                             f"(one of {TOLERANCES})")
        if self.runtime is not None and self.runtime not in RUNTIMES:
            raise ValueError(f"metric {self.name}: unknown runtime {self.runtime!r}; known: {sorted(RUNTIMES)}")

    def matches(self, name: str) -> bool:
        return name == self.name or ("*" in self.name and fnmatch.fnmatchcase(name, self.name))


def accuracy(name: str = "accuracy", doc: str = "", gated: bool = True, runtime: str | None = None) -> Metric:
    return Metric(name, "fraction", HIGHER, gated, "accuracy" if gated else None, runtime, doc=doc)


def ms(name: str, doc: str = "", runtime: str | None = None, gated: bool = True) -> Metric:
    return Metric(name, "ms", LOWER, gated, "time" if gated else None, runtime, doc=doc)


def speedup(name: str, doc: str = "") -> Metric:
    return Metric(name, "x", HIGHER, True, "ratio", doc=doc)


def rate(name: str, doc: str = "") -> Metric:
    return Metric(name, "images/s", HIGHER, True, "time", doc=doc)


def info(name: str, unit: str, doc: str = "", better: str | None = None) -> Metric:
    """Informational: reported, never gated."""
    return Metric(name, unit, better, doc=doc)


def figure(name: str, doc: str = "", on_page: bool = False) -> Metric:
    return Metric(name, "png", on_page=on_page, doc=doc)


# every latency timed by deploy.latency.time_runners
CPU_SHARE = info("cpu_share.*", "x", "CPU seconds the process spent per wall second while the run was timed "
                                     "(below 1 at one thread: other processes took turns on its cores)")


# every record's metrics (the study writes them)
RECORD = (
    info("floor", "fraction", "the profile's accuracy floor for the case (None: not asserted)"),
    info("input_size", "px", "the input resolution the model saw"),
    info("parameters", "count", "parameters of the model measured"),
    info("epochs", "list", "per-epoch history of the case's training"),
    info("fit", "verdict", "underfit, overfit, balanced or undetermined, with its reason (mnv2core.fit)"),
    info("train_seconds", "s", "seconds the model's build took when it was built (None: not a built model)"),
    info("build_seconds", "s", "seconds this run spent getting the case's model: trained now, or loaded"),
    info("measure_seconds", "s", "seconds this run spent evaluating or measuring the model"),
)
# a trained or compressed model's test accuracy and its per-class scores (the study evaluates it)
TEST_ACCURACY = (
    accuracy(doc="test accuracy", runtime="eager fp32"),
    accuracy("balanced_accuracy", "mean of the per-class accuracies (recall): what accuracy means when classes are "
                                  "imbalanced", gated=False),
    Metric("macro_f1", "fraction", HIGHER, doc="mean over classes of F1 (precision and recall)"),
    Metric("roc_auc", "fraction", HIGHER, doc="ROC-AUC of class 1's softmax score (two classes only)"),
    info("per_class_accuracy", "list", "test accuracy (recall) of each class, in the dataset's class order"),
    info("confusion", "list", "test images by true class (rows) and predicted class (columns)"),
)


class Declarations:
    """The metrics one technique's records may hold; exact names first, then families."""

    def __init__(self, technique: str, metrics: tuple[Metric, ...]):
        self.technique = technique
        self.exact = {m.name: m for m in reversed(metrics) if "*" not in m.name}  # the first declaration wins
        self.families = [m for m in metrics if "*" in m.name]

    def find(self, name: str) -> Metric | None:
        return self.exact.get(name) or next((m for m in self.families if m.matches(name)), None)

    def undeclared(self, metrics: dict[str, Any]) -> list[str]:
        """Dotted names of the values in ``metrics`` no declaration covers."""
        return [name for name, _, metric in self.leaves(metrics) if metric is None]

    def leaves(self, metrics: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any, Metric | None]]:
        """(dotted name, value, its declaration or None): a table is walked into unless it
        is declared itself."""
        for key, value in metrics.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            metric = self.find(name)
            if metric is None and isinstance(value, dict) and value:
                yield from self.leaves(value, name)
            else:
                yield name, value, metric

    def mapped(self, metrics: dict[str, Any], change: Callable[[Any, Metric | None], Any],
               prefix: str = "") -> dict[str, Any]:
        """A copy of ``metrics`` with each leaf (as ``leaves`` walks them) ``change(value, its
        declaration or None)``."""
        copied = {}
        for key, value in metrics.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            metric = self.find(name)
            if metric is None and isinstance(value, dict) and value:
                copied[key] = self.mapped(value, change, name)
            else:
                copied[key] = change(value, metric)
        return copied

    def gated(self, metrics: dict[str, Any]) -> dict[str, tuple[float, Metric]]:
        """The numbers the gate compares: name -> (value, declaration)."""
        return {name: (float(value), metric) for name, value, metric in self.leaves(metrics)
                if metric is not None and metric.gated and _number(value)}

    def runtime_values(self, metrics: dict[str, Any], unit: str) -> Iterator[tuple[str, str, float]]:
        """(runtime, name, value) of every number of ``unit`` declared as a runtime's."""
        for name, value, metric in self.leaves(metrics):
            if metric is not None and metric.runtime and metric.unit == unit and _number(value):
                yield metric.runtime, name, float(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
