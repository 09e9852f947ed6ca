"""The regression gate: compare a run's results with a stored baseline.

What is compared, which way is better and with which tolerance comes from each technique's
metric declarations (``metrics.Metric``: gated, better, tolerance), never from a name:
"accuracy" tolerances are in accuracy points, "ratio" ones relative (speed-ups), "time" ones
relative too, and only a warning when the two runs come from different machines or the
profile sets ``gate_times = false``. Accuracies get ``accuracy_points`` on the baseline's own
CPU and on the CPUs its file lists as verified (where a run reproduced every gated accuracy to
the last digit: ``verify``); on any other CPU (vendor, family, model, stepping and the ISA
flags that pick kernels) at least ``cross_cpu_accuracy_points`` and ``standard_errors``
binomial standard errors of the images the accuracy is measured on, since other math kernels
round differently and short trainings amplify it. An accuracy over fewer than
``min_gated_images`` images is reported, never gated.
Speed-up ratios only warn between a CPU with an int8 dot product (VNNI, AMX) and one without:
int8 runtimes run other kernels on each. Improvements never fail; a baseline case missing from
the results does, unless the run
did not select it (``-k``, ``--dataset``: the results list the cases a run selected).
A comparison of nothing fails too (a gate that passes on nothing cannot fail): zero metrics
compared, a baseline of another profile, or a run whose cases share none with the baseline;
``allow_empty`` is for those who mean it.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as schema_dataclass

from .errors import ConfigError
from .execution import INT8_DOT_PRODUCT_FLAGS
from .metrics import HIGHER, Declarations, Metric
from .results import case_items, method_of

Declared = Callable[[str], Declarations]  # technique -> its metric declarations (the catalogue's)


Tolerance = Annotated[float, Field(ge=0)]


@schema_dataclass(frozen=True, config=ConfigDict(extra="forbid", strict=True))
class Tolerances:
    """A profile's [gate] table (checked as it is read)."""

    accuracy_points: Tolerance = 0.02   # allowed drop in accuracy (0.02 = 2 points)
    speedup_ratio: Tolerance = 0.10     # allowed relative drop of a speed-up ratio
    time_ratio: Tolerance = 0.25        # allowed relative slowdown of an absolute time
    # across CPUs the baseline has not been verified on: at least this, and at least
    # standard_errors binomial standard errors of the accuracy over its images
    cross_cpu_accuracy_points: Tolerance = 0.05
    standard_errors: Tolerance = 3.0
    min_gated_images: Annotated[int, Field(ge=0)] = 100  # an accuracy over fewer images is reported, not gated
    gate_times: bool = True  # false: absolute times only warn, even on the same machine (shared VMs)
    per_metric: dict[str, Tolerance] = field(default_factory=dict)  # metric name -> its own tolerance

    def for_metric(self, name: str, metric: Metric, same_cpu: bool = True, accuracy: float = 0.5,
                   images: int | None = None) -> float:
        """The allowed drop; an accuracy's across CPUs grows with its binomial standard error
        over ``images`` (the sample it is measured on)."""
        if name in self.per_metric:
            return self.per_metric[name]
        if metric.tolerance == "accuracy":
            if same_cpu:
                return self.accuracy_points
            # a drop (lower is better, may be negative) has no accuracy of its own: the widest error, at p = 0.5
            p = min(max(accuracy, 0.0), 1.0) if metric.better == HIGHER else 0.5
            spread = self.standard_errors * math.sqrt(p * (1 - p) / images) if images else 0.0
            return max(self.accuracy_points, self.cross_cpu_accuracy_points, spread)
        return self.speedup_ratio if metric.tolerance == "ratio" else self.time_ratio


@dataclass
class GateReport:
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compared: int = 0
    improved: int = 0
    accuracies: int = 0  # gated accuracies found in both
    identical: int = 0  # of them, equal to the last digit

    @property
    def passed(self) -> bool:
        return not self.failures

    def render(self) -> str:
        verdict = "PASSED" if self.passed else f"FAILED ({len(self.failures)} regression(s))"
        lines = [f"regression gate {verdict}: {self.compared} metric(s) compared, {self.improved} improved"]
        lines += [f"  note {line}" for line in self.notes]
        lines += [f"  FAIL {line}" for line in self.failures]
        lines += [f"  warn {line}" for line in self.warnings]
        return "\n".join(lines)


def gated_metrics(extra_info: dict[str, Any], declared: Declared) -> dict[str, tuple[float, Metric]]:
    """The case's gated metrics (dotted names into nested tables), as its technique declares."""
    return declared(method_of(extra_info)).gated(extra_info.get("metrics") or {})


def compare(baseline: dict[str, Any], results: dict[str, Any], tolerances: Tolerances, declared: Declared,
            allow_empty: bool = False) -> GateReport:
    """``declared``: technique -> its metric declarations (``catalogue().declarations``)."""
    report = _compare(baseline, results, tolerances, declared)
    problem = _empty_comparison(baseline, results, report)
    if problem and not allow_empty:
        report.failures.insert(0, f"{problem} (--gate-allow-empty / --allow-empty if that is meant)")
    elif problem:
        report.notes.append(problem)
    return report


def _empty_comparison(baseline: dict[str, Any], results: dict[str, Any], report: GateReport) -> str | None:
    """Why the comparison says nothing about a regression, if it does not."""
    ours, theirs = _profile(results), _profile(baseline)
    if ours and theirs and ours != theirs:
        return f"the baseline is of profile {theirs!r}, this run of {ours!r}: nothing comparable"
    selected = results.get("mnv2bench", {}).get("selected")
    shared = set(case_items(baseline)) & set(selected if selected is not None else case_items(results))
    if not shared:
        return "this run's cases share none with the baseline's: nothing was gated"
    if report.compared == 0 and not report.failures:
        return "no metric was compared: nothing was gated"
    return None


def preflight(baseline: dict[str, Any], profile: str, case_ids: list[str]) -> str | None:
    """Before anything trains: why gating this run against ``baseline`` would compare nothing."""
    theirs = _profile(baseline)
    if theirs and theirs != profile:
        return f"the baseline is of profile {theirs!r}, this run of {profile!r}: nothing comparable"
    if not set(case_items(baseline)) & set(case_ids):
        return "this run's cases share none with the baseline's: nothing would be gated"
    return None


def _profile(document: dict[str, Any]) -> str | None:
    return (document.get("mnv2bench") or {}).get("profile")


def _compare(baseline: dict[str, Any], results: dict[str, Any], tolerances: Tolerances,
             declared: Declared) -> GateReport:
    report = GateReport()
    same_machine = _machine(baseline) == _machine(results)
    same_int8 = _int8_dot_product(baseline) == _int8_dot_product(results)
    if not same_int8:
        report.notes.append("one of the two CPUs has an int8 dot product (VNNI, AMX) and the other not: int8 "
                            "runtimes run other kernels there, so speed-up ratios only warn")
    theirs, ours = cpu_identity(baseline), cpu_identity(results)
    verified = verified_cpus(baseline)
    same_cpu = ours in verified
    if not same_cpu:
        report.notes.append(f"this run's CPU {ours} is not one the baseline was verified on ({'; '.join(verified)}): "
                            f"accuracies allowed {max(tolerances.accuracy_points, tolerances.cross_cpu_accuracy_points) * 100:.0f} "
                            f"points or {tolerances.standard_errors:g} standard errors, not "
                            f"{tolerances.accuracy_points * 100:.1f}")
    elif ours != theirs:
        report.notes.append(f"this run's CPU {ours} reproduced the baseline's numbers before: gated as the baseline's own")
    if (probe := _probe_note(baseline, results, ours != theirs)) is not None:
        report.notes.append(probe)
    current = case_items(results)
    selected = results.get("mnv2bench", {}).get("selected")
    unselected = 0
    for case, base_extra in case_items(baseline).items():
        try:
            expected = gated_metrics(base_extra, declared)
        except ConfigError as exc:
            report.failures.append(f"{case}: {exc} (a baseline of other code: record it again)")
            continue
        if not expected:
            continue
        extra = current.get(case)
        if extra is None and selected is not None and case not in selected:
            unselected += 1
            continue
        measured = {name: value for name, (value, _) in gated_metrics(extra, declared).items()} if extra else {}
        if not measured:
            why = "not in the results" if extra is None else f"{extra.get('outcome', '?')} without metrics"
            report.failures.append(f"{case}: missing ({why}); the baseline has {sorted(expected)}")
            continue
        images = sample_size(extra or {})
        loaded = bool(((extra or {}).get("metrics") or {}).get("under_load"))
        for name, (old, metric) in expected.items():
            _check(report, case, name, metric, old, measured.get(name), tolerances, same_machine, same_cpu,
                   same_int8, images, loaded)
            if metric.tolerance == "accuracy" and name in measured:
                report.accuracies += 1
                report.identical += measured[name] == old
    if not same_cpu and report.accuracies:
        reproduced = report.identical == report.accuracies
        report.notes.append(f"{report.identical} of {report.accuracies} gated accuracies are identical to the "
                            f"baseline's" + (": this CPU reproduces it; `python -m mnv2core gate BASELINE RESULTS "
                                             "--verify` adds it to the baseline's verified CPUs" if reproduced else ""))
    if unselected:
        report.notes.append(f"{unselected} baseline case(s) not selected in this run (-k, --dataset): not gated")
    return report


def _check(report: GateReport, case: str, name: str, metric: Metric, old: float, new: float | None,
           tolerances: Tolerances, same_machine: bool, same_cpu: bool, same_int8: bool = True,
           images: int | None = None, loaded: bool = False) -> None:
    if new is None:
        report.failures.append(f"{case}: metric {name} is missing from the results")
        return
    bad = [f"{side} {value}" for side, value in (("baseline", old), ("results", new))
           if not isinstance(value, (int, float)) or not math.isfinite(value)]
    if bad:  # NaN compares false both ways: it would pass every check below
        report.failures.append(f"{case}: metric {name} is not a finite number ({', '.join(bad)})")
        return
    if metric.tolerance == "accuracy" and images is not None and images < tolerances.min_gated_images:
        if new < old:
            report.warnings.append(f"{case}: {name} {old:.4f} -> {new:.4f} [over {images} images, fewer than "
                                   f"{tolerances.min_gated_images}: reported, not gated]")
        return
    tolerance = tolerances.for_metric(name, metric, same_cpu, old, images)
    report.compared += 1
    gain = new - old if metric.better == HIGHER else old - new
    if metric.tolerance == "accuracy":  # in points
        worse, improved = -gain > tolerance, gain > 0
        change = f"{old:.4f} -> {new:.4f} ({(new - old) * 100:+.1f} points, tolerance {tolerance * 100:.1f})"
    else:  # relative
        ratio = new / old if old else float("inf")
        worse = ratio < 1 - tolerance if metric.better == HIGHER else ratio > 1 + tolerance
        improved = gain > 0
        change = f"{old:.4g} -> {new:.4g} (x{ratio:.2f}, tolerance {tolerance:.0%})"
    report.improved += improved
    if not worse:
        return
    line = f"{case}: {name} {change}"
    if metric.tolerance == "time" and not same_machine:
        report.warnings.append(line + " [different machine: absolute times are not gated]")
    elif metric.tolerance == "time" and loaded:  # ratios stay gated: alternating rounds share the load
        report.warnings.append(line + " [timed under load: other processes took turns on its cores]")
    elif metric.tolerance == "ratio" and not same_int8:
        report.warnings.append(line + " [one CPU has an int8 dot product, the other not: speed-ups are not gated]")
    elif metric.tolerance == "time" and not tolerances.gate_times:
        report.warnings.append(line + " [the profile does not gate absolute times]")
    else:
        report.failures.append(line)


KERNEL_FLAGS = ("avx512", "amx", "avx_vnni")  # ISA extensions that change which math kernels run


def _int8_dot_product(document: dict[str, Any]) -> bool | None:
    """Whether the run's CPU has an int8 dot product (None: its flags are not recorded)."""
    flags = ((document.get("machine_info") or {}).get("cpu") or {}).get("flags")
    return None if flags is None else bool(set(INT8_DOT_PRODUCT_FLAGS) & set(flags))


def _probe_note(baseline: dict[str, Any], results: dict[str, Any], other_cpu: bool) -> str | None:
    """Which ops compute other bits in this run than in the baseline's (kernel_probe): said
    whenever some do, and on another CPU also when none does."""
    theirs, ours = ((d.get("mnv2bench") or {}).get("kernel_probe") or {} for d in (baseline, results))
    shared = [name for name in ours if name in theirs]
    differ = [name for name in shared if ours[name] != theirs[name]]
    if differ:
        return (f"kernel probe: {len(differ)} of {len(shared)} ops compute other bits than the baseline's run did "
                f"({', '.join(differ)}): training drifts from there")
    if shared and other_cpu:
        return f"kernel probe: all {len(shared)} ops compute the bits they did on the baseline's CPU"
    return None


def sample_size(extra: dict[str, Any]) -> int | None:
    """The images a case's accuracies are measured on: its own sample (``images``), else the
    dataset's test split."""
    images = (extra.get("metrics") or {}).get("images")
    if isinstance(images, int):
        return images
    return ((extra.get("provenance") or {}).get("data") or {}).get("test_images")


def verified_cpus(baseline: dict[str, Any]) -> list[str]:
    """The CPUs on which the baseline's numbers were reproduced to the last digit: the one
    that recorded it, and those ``verify`` added."""
    listed = (baseline.get("mnv2bench") or {}).get("verified_cpus") or []
    return list(dict.fromkeys([cpu_identity(baseline), *listed]))


def verify(baseline: dict[str, Any], results: dict[str, Any], report: GateReport) -> str:
    """Add the results' CPU to the baseline's verified CPUs, where every gated accuracy of the
    comparison ``report`` was identical; else ConfigError saying what differed."""
    ours = cpu_identity(results)
    if report.accuracies == 0 or report.identical != report.accuracies or not report.passed:
        raise ConfigError(f"not verified: {report.identical} of {report.accuracies} gated accuracies are identical "
                          f"to the baseline's on {ours}{'' if report.passed else ', and the gate failed'}")
    run = baseline.setdefault("mnv2bench", {})
    run["verified_cpus"] = [c for c in verified_cpus(baseline) if c != cpu_identity(baseline)] + [ours]
    return ours


def cpu_identity(document: dict[str, Any]) -> str:
    """Vendor, family, model, stepping and kernel-picking ISA flags of the run's CPU (its
    brand string when older results lack the rest)."""
    info = document.get("machine_info") or {}
    cpu = info.get("cpu") or {}
    if cpu.get("family") is None:
        return f"{cpu.get('brand_raw')} ({info.get('machine')})"
    flags = sorted({f for f in cpu.get("flags", []) if f.startswith(KERNEL_FLAGS)})
    return (f"{cpu.get('vendor_id_raw')} family {cpu.get('family')} model {cpu.get('model')} stepping "
            f"{cpu.get('stepping')} ({info.get('machine')}; {', '.join(flags) if flags else 'no avx512/amx/avx_vnni'})")


def _machine(document: dict[str, Any]) -> tuple:
    info = document.get("machine_info") or {}
    cpu = info.get("cpu") or {}
    return info.get("node"), cpu.get("brand_raw"), cpu.get("count"), info.get("machine")
