"""The run's results file, in pytest-benchmark's JSON schema, built from the case entries
the pytest controller appends to ``records-RUN.jsonl`` as each case finishes."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytest_benchmark.stats import Stats

from .errors import ConfigError, Mnv2BenchError

log = logging.getLogger("mnv2bench.results")

RESULTS_FORMAT = 1
OUTCOME_RANK = {"passed": 0, "skipped": 1, "failed": 2}
STATS_MEASURE = ("seconds this run spent evaluating or measuring the case's model (extra_info.metrics."
                 "measure_seconds); getting the model, built or loaded, is extra_info.metrics.build_seconds")


class ResultsError(Mnv2BenchError):
    """A results or records file that cannot be read."""


def read_records(path: Path) -> list[dict[str, Any]]:
    """Case entries of a records file. A line cut short by a crash is skipped with a
    warning: every entry written before it is kept."""
    entries = []
    if not Path(path).is_file():
        raise ConfigError(f"no records file {path}: a run writes records-RUN.jsonl in its --results-dir "
                          f"(.mnv2results by default)")
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s:%d: skipped an unreadable (truncated?) case entry", path, number)
    return entries


def merge_entries(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per test: a failing phase (setup/teardown) outranks a passing call,
    and every record the test left is kept."""
    merged: dict[str, dict[str, Any]] = {}
    for entry in entries:
        previous = merged.get(entry["nodeid"])
        if previous is None:
            merged[entry["nodeid"]] = dict(entry, records=list(entry["records"]))
            continue
        previous["records"] += entry["records"]
        previous["duration"] += entry["duration"]
        if OUTCOME_RANK[entry["outcome"]] > OUTCOME_RANK[previous["outcome"]]:
            previous.update(outcome=entry["outcome"], when=entry["when"], error=entry["error"])
    return list(merged.values())


def benchmark_item(entry: dict[str, Any]) -> dict[str, Any]:
    """One ``benchmarks[]`` item. Its stats (one round) time the case's evaluation or
    measurement in this run, apart from getting its model (built or loaded: the record's
    ``build_seconds``); the case's own metrics, provenance, seed and cache key go in
    ``extra_info``."""
    record = entry["records"][0] if entry["records"] else {}
    dataset, model, technique = entry["case"].rsplit("-", 2)
    measured = (record.get("metrics") or {}).get("measure_seconds")
    stats = Stats()
    stats.update(entry["duration"] if measured is None else measured)
    extra = {"case": entry["case"], "dataset": dataset, "model": model, "technique": technique,
             "outcome": entry["outcome"], "error": entry["error"], **record}
    module, _, name = entry["nodeid"].partition("::")
    return {
        "group": Path(module).stem.removeprefix("test_"),
        "name": name, "fullname": entry["nodeid"],
        "params": {"case": entry["case"]}, "param": entry["case"],
        "extra_info": extra,
        "options": {"timer": "perf_counter", "rounds": 1, "measures": STATS_MEASURE if measured is not None else
                    "wall time of the test in this run (it recorded no measurement)"},
        "stats": {**stats.as_dict(), "iterations": 1},
    }


def build_results(entries: Iterable[dict[str, Any]], *, machine_info: dict, commit_info: dict,
                  run: dict[str, Any]) -> dict[str, Any]:
    """The whole results document. ``run`` says which run, profile and grid it covers."""
    return {
        "machine_info": machine_info,
        "commit_info": commit_info,
        "benchmarks": [benchmark_item(e) for e in merge_entries(entries)],
        "datetime": datetime.now(UTC).isoformat(),
        "version": _pytest_benchmark_version(),
        "mnv2bench": {"format": RESULTS_FORMAT, **run},
    }


def load_results(path: Path) -> dict[str, Any]:
    """A results file, checked enough that the report and the gate can trust its shape."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file; a pytest run writes one under its "
                           "--results-dir (latest.json) or where --benchmark-json says") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc}); rebuild it from the run's records with "
                           "'python -m mnv2core merge RECORDS.jsonl -o RESULTS.json'") from None
    if not isinstance(document, dict) or not isinstance(document.get("benchmarks"), list):
        raise ResultsError(f"{path}: not a pytest-benchmark results file (no 'benchmarks' list)")
    return document


def case_items(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The grid cases of a results document by case id (their ``extra_info``)."""
    items = {}
    for item in document["benchmarks"]:
        extra = item.get("extra_info") or {}
        if "case" in extra:
            items[extra["case"]] = extra
    return items


def method_of(extra: dict[str, Any]) -> str | None:
    """The registered technique behind a case entry. Older entries lack "method": a derived
    case's technique is then named BASE_METHOD (the grid's rule), anything else its own."""
    if extra.get("method"):
        return extra["method"]
    base, derived, technique = extra.get("base"), extra.get("derived"), extra.get("technique")
    return derived if derived and technique == f"{base}_{derived}" else technique


def _pytest_benchmark_version() -> str:
    from pytest_benchmark import __version__
    return __version__
