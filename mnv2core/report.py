"""The comparison tables, rendered with tabulate from a results document."""
from __future__ import annotations

from typing import Any

from tabulate import tabulate

from .classification import IMBALANCE_RATIO, imbalance
from .gate import cpu_identity
from .registry import Found, Table
from .results import case_items, method_of
from .techniques import catalogue

FORMATS = {"md": "github", "terminal": "simple"}


def summary_layout(items: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str | None, str]]]:
    """The study's headline table as the techniques declare it: (row title, trained technique)
    rows, and (title, derived technique or None: the row's own case, metric) columns, in the
    order the results hold them (the grid's)."""
    order = list(dict.fromkeys(method_of(extra) for extra in items.values()))
    known = catalogue()
    techniques = sorted(known.techniques.values(),  # absent ones last, compressions first
                        key=lambda t: (order.index(t.name) if t.name in order else len(order), not t.role.retrains))
    shown = [(t.name, known.presentation(t.name)) for t in techniques]
    rows = [(p.summary_row, name) for name, p in shown if p.summary_row]
    columns = [("base acc", None, "accuracy")] + [(p.summary_column[0], name, p.summary_column[1])
                                                  for name, p in shown if p.summary_column]
    return rows, columns


def render_report(document: dict[str, Any], fmt: str = "terminal") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; choose from {sorted(FORMATS)}")
    run = document.get("mnv2bench", {})
    items = items_in_grid_order(document)
    expected = run.get("cases") or list(items)
    sections = [_heading(f"mnv2bench results: profile {run.get('profile', '?')}", 1, fmt), run_line(document)]
    for dataset in _ordered_datasets(expected, items):
        sections.append(_heading(dataset, 2, fmt))
        sections.append(_imbalance_note(dataset, items))
        sections += [_table(f"Study summary: {model}", summary_rows(dataset, items, model), fmt)
                     for model in models_of(dataset, items)]
        sections += [
                     _table("Training", _training(dataset, items, expected), fmt),
                     _table("Convergence: test accuracy per epoch (VGG16: validation accuracy)",
                            _convergence(dataset, items, expected), fmt),
                     _table("Fit: training against held-out accuracy at the last epoch (rules: mnv2core/fit.py)",
                            _fit(dataset, items, expected), fmt)]
        sections += [_table(table.title, table.rows(found), fmt) for table, found in _technique_tables(dataset, items)]
        sections += [analysis.text(_found(items, analysis.techniques, dataset))
                     for analysis in catalogue().analyses if not analysis.across_datasets]
    sections += [analysis.text(_found(items, analysis.techniques)) for analysis in catalogue().analyses
                 if analysis.across_datasets]
    sections.append(_table("Cases that did not pass", _problems(items), fmt))
    sections.append(_provenance(items, fmt))
    return "\n\n".join(s for s in sections if s) + "\n"


def items_in_grid_order(document: dict[str, Any]) -> dict[str, dict]:
    """The document's case items in the grid's order (results files list them as they finished)."""
    found = case_items(document)
    expected = document.get("mnv2bench", {}).get("cases") or list(found)
    return {case: found[case] for case in _in_order(expected, found) if case in found}


def models_of(dataset: str, items: dict) -> list[str]:
    """The models of the dataset's study techniques, in grid order."""
    studied = {technique for _, technique in summary_layout(items)[0]}
    return list(dict.fromkeys(extra.get("model") for case, extra in items.items()
                              if _dataset_of(case) == dataset and extra.get("technique") in studied))


def summary_rows(dataset: str, items: dict, model: str) -> list[dict[str, str]]:
    rows = []
    layout, columns = summary_layout(items)
    for title, technique in layout:
        case = _case_id(dataset, model, technique)
        if case not in items:
            continue
        row = {"method": title}
        for column, derived, metric in columns:
            source = case if derived is None else _derived_case(items, dataset, model, technique, derived)
            row[column] = _metric_cell(items, source, metric)
        rows.append(row)
    ran = any(cell != "not run" for row in rows for column, cell in row.items() if column != "method")
    return rows if ran else []  # a dataset of the companion studies only


def _training(dataset: str, items: dict, expected: list[str]) -> list[dict[str, Any]]:
    rows = []
    for case in [c for c in _in_order(expected, items) if _dataset_of(c) == dataset]:
        extra = items.get(case, {})
        metrics = extra.get("metrics", {})
        weights = extra.get("provenance", {}).get("weights", {})
        rows.append({
            "case": case.removeprefix(dataset + "-"),
            "accuracy": _metric_cell(items, case, "accuracy"),
            "balanced acc": f"{metrics['balanced_accuracy']:.4f}" if "balanced_accuracy" in metrics else "",
            "floor": metrics.get("floor", ""),
            "input px": metrics.get("input_size", ""),
            "recipe": _recipe(extra),
            "params (M)": f"{metrics['parameters'] / 1e6:.2f}" if "parameters" in metrics else "",
            "train s": f"{metrics['train_seconds']:.0f}" if metrics.get("train_seconds") is not None else "",
            "cache": extra.get("cache", {}).get("status", ""),
            "start weights": weights.get("source", ""),
        })
    if not any(row["balanced acc"] for row in rows):  # records from before per-class scores
        rows = [{k: v for k, v in row.items() if k != "balanced acc"} for row in rows]
    return rows


def _imbalance_note(dataset: str, items: dict) -> str:
    """A warning when the dataset's test classes are imbalanced, and which metric ranks."""
    confusion = next((extra["metrics"]["confusion"] for case, extra in items.items()
                      if _dataset_of(case) == dataset and "confusion" in extra.get("metrics", {})), None)
    if confusion is None or imbalance(confusion) <= IMBALANCE_RATIO:
        return ""
    counts = [sum(row) for row in confusion]
    return (f"WARNING: the test classes are imbalanced ({min(counts)} to {max(counts)} images per class): the tables "
            f"rank by top-1 accuracy, which a model can earn by favouring the large classes; read balanced accuracy "
            f"(the Training table) and each record's macro_f1, per_class_accuracy and confusion beside it.")


def _recipe(extra: dict) -> str:
    """How a trained or retrained case trained, with the share of the training split it saw
    ("2 ep x 20,000 of 50,000 imgs, sgd 0.05 onecycle"); blank for measurements."""
    provenance = extra.get("provenance", {})
    train, data = provenance.get("train"), provenance.get("data") or {}
    if not train or extra.get("cache", {}).get("status") in ("measured", "reused") or "epochs" not in train:
        return ""
    total, asked = data.get("train_images"), train.get("train_images") or 0  # 0: all of them
    images = f"{asked:,} of {total:,}" if total and 0 < asked < total else f"all {total:,}" if total else "?"
    return f"{train['epochs']} ep x {images} imgs, {train['optimizer']} {train['lr']:g} {train['schedule']}"


def _convergence(dataset: str, items: dict, expected: list[str]) -> list[dict[str, Any]]:
    rows = []
    for case in _in_order(expected, items):
        history = items.get(case, {}).get("metrics", {}).get("epochs")
        if _dataset_of(case) != dataset or not history:
            continue
        row = {"case": case.removeprefix(dataset + "-")}
        row.update({f"ep {h['epoch']}": f"{h.get('test_accuracy', h.get('val_accuracy')):.3f}" for h in history})
        rows.append(row)
    return rows


def _fit(dataset: str, items: dict, expected: list[str]) -> list[dict[str, Any]]:
    rows = []
    for case in _in_order(expected, items):
        metrics = items.get(case, {}).get("metrics", {})
        fit = metrics.get("fit")
        if _dataset_of(case) != dataset or not fit or items[case].get("base"):
            continue  # a derived case measures its base's training: that base's row says it
        known = "gap" in fit
        rows.append({"case": case.removeprefix(dataset + "-"), "epochs": len(metrics.get("epochs") or []),
                     "train acc": f"{fit['train_accuracy']:.3f}" if known else "",
                     "held-out acc": f"{fit['held_out_accuracy']:.3f} ({fit['held_out']})" if known else "",
                     "gap (points)": f"{fit['gap'] * 100:+.1f}" if known else "",
                     "fit": fit["verdict"], "why": fit["reason"]})
    return rows


def _technique_tables(dataset: str, items: dict) -> list[tuple[Table, dict[str, Found]]]:
    """(table, technique -> its cases) of every declared table with cases on ``dataset``, in
    the grid's (the profile's) order."""
    order = list(dict.fromkeys(method_of(extra) for case, extra in items.items() if _dataset_of(case) == dataset))
    found = [(table, _found(items, table.techniques, dataset)) for table in catalogue().tables]
    found = [(table, cases) for table, cases in found if any(cases.values())]
    return sorted(found, key=lambda pair: min(order.index(t) for t in pair[0].techniques if t in order))


def case_label(extra: dict) -> str:
    """A case's model and, for a derived case, its base ("mobilenet_v2 full_ft")."""
    return " ".join([extra.get("model", "?")] + ([extra["base"]] if extra.get("base") else []))


def _found(items: dict, techniques: tuple[str, ...], dataset: str | None = None) -> dict[str, Found]:
    """technique -> (label, metrics) of its cases on ``dataset`` (None: on every dataset, the
    label then starting with the dataset), of the cases that recorded metrics. A label names
    the model and the base ("mobilenet_v2 full_ft")."""
    found: dict[str, Found] = {technique: [] for technique in techniques}
    for case, extra in items.items():
        technique = method_of(extra)
        if not extra.get("metrics"):
            continue  # a case that recorded nothing (it errored): the report's problems say why
        if technique in found and (dataset is None or _dataset_of(case) == dataset):
            label = case_label(extra) if dataset else f"{_dataset_of(case)} {case_label(extra)}"
            found[technique].append((label, extra.get("metrics", {})))
    return found


def _problems(items: dict) -> list[dict[str, str]]:
    return [{"case": case, "outcome": extra["outcome"], "why": _first_line(extra.get("error"))}
            for case, extra in items.items() if extra.get("outcome", "passed") != "passed"]


def _first_line(text: str | None, limit: int = 100) -> str:
    """The reason of a failure: pytest's first "E" line, else the last line of the report."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    line = errors[0] if errors else (lines[-1] if lines else "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _provenance(items: dict, fmt: str) -> str:
    """Where the data and the starting weights came from; stand-ins are named as such."""
    lines = set()
    for extra in items.values():
        provenance = extra.get("provenance", {})
        data, weights = provenance.get("data"), provenance.get("weights")
        if data:
            lines.add(f"data {data['dataset']}: {data['source']} from {data['location']} "
                      f"({data['train_images']} train / {data['test_images']} test)"
                      + (f"; STAND-IN: {data['note']}" if data.get("stand_in") else ""))
        if weights and weights.get("source") != "none":
            lines.add(f"weights {weights['model']}: {weights['source']} sha256 {str(weights.get('sha256'))[:12]}"
                      + (f"; STAND-IN: {weights['note']}" if weights.get("stand_in") else ""))
        elif weights and weights.get("note", "").startswith("no pretrained weights"):
            lines.add(f"weights {weights['model']}: none; {weights['note']}")  # the profile wanted some
    if not lines:
        return ""
    bullet = "- " if fmt == "md" else "  "
    return _heading("Provenance", 2, fmt) + "\n\n" + "\n".join(bullet + line for line in sorted(lines))


def _metric_cell(items: dict, case: str | None, metric: str) -> str:
    """A number, or why there is none: not run, skipped, failed (before recording)."""
    extra = items.get(case) if case else None
    if extra is None:
        return "not run"
    value = extra.get("metrics", {}).get(metric)
    if value is None:
        return extra.get("outcome", "not recorded")
    text = f"{value:.3f}"
    return text if extra.get("outcome") == "passed" else f"{text} ({extra.get('outcome')})"


def _derived_case(items: dict, dataset: str, model: str, base: str, derived: str) -> str | None:
    for case, extra in items.items():
        if (_dataset_of(case) == dataset and extra.get("model") == model and extra.get("base") == base
                and method_of(extra) == derived):
            return case
    return None


def _table(title: str, rows: list[dict[str, Any]], fmt: str) -> str:
    if not rows:
        return ""
    return f"{title}\n\n{tabulate(rows, headers='keys', tablefmt=FORMATS[fmt], disable_numparse=True)}"


def _heading(text: str, level: int, fmt: str) -> str:
    if fmt == "md":
        return "#" * level + " " + text
    return f"{text}\n{('=' if level == 1 else '-') * len(text)}"


def run_line(document: dict[str, Any]) -> str:
    run = document.get("mnv2bench", {})
    commit = document.get("commit_info", {})
    machine = document.get("machine_info", {})
    return (f"run {run.get('run_id', '?')}, seed {run.get('seed', '?')}, commit {str(commit.get('id'))[:10]}"
            f"{' (dirty)' if commit.get('dirty') else ''}, {machine.get('node', '?')} ({cpu_identity(document)}), "
            f"{document.get('datetime', '?')[:19]}")


def _in_order(expected: list[str], items: dict) -> list[str]:
    """The grid's cases in grid order, then any other case that has a result."""
    return list(dict.fromkeys([*expected, *items]))


def _ordered_datasets(expected: list[str], items: dict) -> list[str]:
    return list(dict.fromkeys(_dataset_of(c) for c in _in_order(expected, items)))


def _dataset_of(case: str) -> str:
    return case.rsplit("-", 2)[0]


def _case_id(dataset: str, model: str, technique: str) -> str:
    return f"{dataset}-{model}-{technique}"
