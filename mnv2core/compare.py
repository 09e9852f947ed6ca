"""Two runs side by side, from their results files (the gate's and the report's input): every
declared numeric metric of every case, its value in each run, the change, and whether it moved
the better or the worse way, as its technique declares."""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from tabulate import tabulate

from .errors import ConfigError
from .metrics import HIGHER, LOWER, Declarations
from .results import case_items, method_of

Declared = Callable[[str], Declarations]
WORDS = ("and", "or", "not")


def case_filter(expression: str | None) -> Callable[[str], bool]:
    """A ``-k`` expression as pytest reads one: words matched as substrings of the case id,
    joined by ``and``, ``or``, ``not`` and parentheses."""
    if not expression:
        return lambda case: True
    tokens = re.findall(r"\(|\)|[^\s()]+", expression)

    def selected(case: str) -> bool:
        text = " ".join(t if t in WORDS or t in "()" else str(t in case) for t in tokens)
        try:  # nothing but True, False, and, or, not and parentheses reach eval
            return bool(eval(text, {"__builtins__": {}}))  # noqa: S307
        except SyntaxError:
            raise ConfigError(f"-k {expression!r}: not an expression of words joined by and, or, not "
                              f"and parentheses") from None
    selected("")  # a malformed expression fails before anything is compared
    return selected


def numeric_metrics(extra: dict[str, Any], declared: Declared) -> dict[str, tuple[float, Any]]:
    """A case's declared numeric metrics: dotted name -> (value, declaration)."""
    method = method_of(extra)
    try:
        declarations = declared(method)
    except (ConfigError, KeyError):
        return {}  # a technique this code does not have: nothing it declares
    return {name: (value, metric) for name, value, metric in declarations.leaves(extra.get("metrics") or {})
            if metric is not None and isinstance(value, (int, float)) and not isinstance(value, bool)}


def compare_runs(first: dict[str, Any], second: dict[str, Any], declared: Declared, expression: str | None = None,
                 changed_only: bool = False) -> list[dict[str, str]]:
    """One row per case and metric of either run (selected by ``expression``): the two values,
    the change, and which way it went."""
    selected = case_filter(expression)
    ours, theirs = case_items(first), case_items(second)
    rows = []
    for case in [c for c in dict.fromkeys([*ours, *theirs]) if selected(c)]:
        a = numeric_metrics(ours.get(case, {}), declared)
        b = numeric_metrics(theirs.get(case, {}), declared)
        if case not in ours or case not in theirs:
            rows.append({"case": case, "metric": "", "A": "" if case not in ours else "present",
                         "B": "" if case not in theirs else "present", "change": "",
                         "verdict": "only in " + ("B" if case not in ours else "A")})
            continue
        for name in dict.fromkeys([*a, *b]):
            row = _row(case, name, a.get(name), b.get(name))
            if not changed_only or row["verdict"] not in ("", "same"):
                rows.append(row)
    return rows


def _row(case: str, name: str, a: tuple | None, b: tuple | None) -> dict[str, str]:
    metric = (a or b)[1]
    first, second = (a or (None,))[0], (b or (None,))[0]
    row = {"case": case, "metric": f"{name} ({metric.unit})", "A": _number(first), "B": _number(second)}
    if first is None or second is None:
        return {**row, "change": "", "verdict": f"only in {'B' if first is None else 'A'}"}
    if not (math.isfinite(first) and math.isfinite(second)):
        return {**row, "change": "", "verdict": "not a number" if first != second else "same"}
    change = second - first
    if change == 0:
        verdict = "same"
    elif metric.better in (HIGHER, LOWER):
        verdict = "better" if (change > 0) == (metric.better == HIGHER) else "worse"
    else:
        verdict = ""  # a setting or a description: no better way
    points = metric.unit == "fraction"
    shown = f"{change * 100:+.2f} points" if points else f"{change:+.4g}" + (
        f" ({change / abs(first):+.1%})" if first else "")
    return {**row, "change": shown, "verdict": verdict}


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def render(rows: list[dict[str, str]], names: tuple[str, str], fmt: str = "terminal") -> str:
    """The rows as a table (``md``: GitHub markdown), with a count of what moved which way."""
    counts = {verdict: sum(r["verdict"] == verdict for r in rows) for verdict in ("better", "worse", "same")}
    header = (f"A: {names[0]}\nB: {names[1]}\n{len(rows)} row(s): {counts['better']} better, "
              f"{counts['worse']} worse, {counts['same']} same")
    if not rows:
        return header + "\n"
    table = tabulate(rows, headers="keys", tablefmt="github" if fmt == "md" else "simple")
    return f"{header}\n\n{table}\n"
