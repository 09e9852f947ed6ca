"""The comparison tables, rendered with tabulate from a results document."""
from __future__ import annotations

from typing import Any

from tabulate import tabulate

from .techniques import catalogue
from .report_companion import companion_tables, lowrank_note
from .gate import cpu_identity
from .results import case_items

FORMATS = {"md": "github", "terminal": "simple"}
# The study's headline table: one row per training method...
SUMMARY_ROWS = [("Partial Tuning", "partial_ft"), ("Full Fine-Tuning", "full_ft"), ("Distillation", "kd")]
# ...and, per column, the metric and where it lives: the method's own case, or a case
# derived from it (a later technique whose extra_info names the method as its "base").
SUMMARY_COLUMNS = [("base acc", None, "accuracy"), ("acc after pruning", "prune", "accuracy"),
                   ("int8 acc", "int8", "accuracy"), ("FGSM acc", "fgsm", "accuracy")]


def render_report(document: dict[str, Any], fmt: str = "terminal") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; choose from {sorted(FORMATS)}")
    run = document.get("mnv2bench", {})
    found = case_items(document)
    expected = run.get("cases") or list(found)
    items = {case: found[case] for case in _in_order(expected, found) if case in found}  # grid order
    sections = [_heading(f"mnv2bench results: profile {run.get('profile', '?')}", 1, fmt), run_line(document)]
    for dataset in _ordered_datasets(expected, items):
        sections.append(_heading(dataset, 2, fmt))
        sections += [_table(f"Study summary: {model}", summary_rows(dataset, items, model), fmt)
                     for model in models_of(dataset, items)]
        sections += [
                     _table("Training", _training(dataset, items, expected), fmt),
                     _table("Convergence: test accuracy per epoch (VGG16: validation accuracy)",
                            _convergence(dataset, items, expected), fmt)]
        sections += [_table(title, rows(_derived(dataset, items, name)), fmt)
                     for name, (title, rows) in _technique_tables(dataset, items)]
        sections.append(_int8_verdict(_derived(dataset, items, "int8")))
        sections += [_table(title, rows, fmt) for title, rows in companion_tables(dataset, items)]
        sections.append(lowrank_note({e["technique"]: e.get("metrics", {}) for c, e in items.items()
                                      if _dataset_of(c) == dataset and "technique" in e}))
    sections.append(resolution_analysis(items))
    sections.append(_table("Cases that did not pass", _problems(items), fmt))
    sections.append(_provenance(items, fmt))
    return "\n\n".join(s for s in sections if s) + "\n"


def models_of(dataset: str, items: dict) -> list[str]:
    """The models of the dataset's study techniques, in grid order."""
    studied = {technique for _, technique in SUMMARY_ROWS}
    return list(dict.fromkeys(extra.get("model") for case, extra in items.items()
                              if _dataset_of(case) == dataset and extra.get("technique") in studied))


def summary_rows(dataset: str, items: dict, model: str = "mobilenet_v2") -> list[dict[str, str]]:
    rows = []
    for title, technique in SUMMARY_ROWS:
        case = _case_id(dataset, model, technique)
        if case not in items:
            continue
        row = {"method": title}
        for column, derived, metric in SUMMARY_COLUMNS:
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
            "floor": metrics.get("floor", ""),
            "input px": metrics.get("input_size", ""),
            "recipe": _recipe(extra),
            "params (M)": f"{metrics['parameters'] / 1e6:.2f}" if "parameters" in metrics else "",
            "train s": f"{metrics['train_seconds']:.0f}" if metrics.get("train_seconds") is not None else "",
            "cache": extra.get("cache", {}).get("status", ""),
            "start weights": weights.get("source", ""),
        })
    return rows


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


def _technique_tables(dataset: str, items: dict) -> list[tuple[str, tuple]]:
    """(technique, (title, rows)) of every registered technique with a table whose cases ran
    on ``dataset``, in the grid's (the profile's) order."""
    techniques = catalogue().techniques
    ran = dict.fromkeys(extra.get("derived") for case, extra in items.items() if _dataset_of(case) == dataset)
    return [(name, techniques[name].table) for name in ran if name in techniques and techniques[name].table]


def _derived(dataset: str, items: dict, derived: str) -> list[tuple[str, dict]]:
    """(base labelled with its model, "mobilenet_v2 full_ft"; metrics) of the dataset's cases
    derived by ``derived``."""
    return [(f"{extra.get('model', '?')} {extra.get('base', '')}", extra.get("metrics", {}))
            for case, extra in items.items() if _dataset_of(case) == dataset and extra.get("derived") == derived]


def _int8_verdict(found) -> str:
    """The study's question: is the full fine-tuned or the distilled model more stable under
    int8? Asked of the distilled student's model, against its own full fine-tune."""
    by_label = {label: m for label, m in found if "int8_drop" in m}
    students = [label.rsplit(" ", 1)[0] for label in by_label if label.endswith(" kd")]
    drops = {base: by_label[f"{students[0]} {base}"]["int8_drop"] for base in ("full_ft", "kd")
             if students and f"{students[0]} {base}" in by_label}
    if len(drops) < 2:
        return ""
    steadier = min(drops, key=drops.get)
    other = "kd" if steadier == "full_ft" else "full_ft"
    names = {"full_ft": "the full fine-tuned model", "kd": "the distilled model"}
    return (f"More stable under int8: {names[steadier]} (accuracy change {-drops[steadier] * 100:+.1f} points "
            f"against {-drops[other] * 100:+.1f} for {names[other]}).")


def resolution_analysis(items: dict) -> str:
    """A few sentences from the Grad-CAM numbers: which input resolution and dataset give
    more faithful (insertion - deletion AUC) and more focused (top-10% mass) maps."""
    rows = [(case, extra["metrics"]) for case, extra in items.items()
            if extra.get("derived") == "gradcam" and "deletion_auc" in extra.get("metrics", {})]
    if len(rows) < 2:
        return ""
    def label(case, m):
        return f"{case.rsplit('-', 2)[0]} {m['input_size']} px ({items[case]['base']}, map {'x'.join(map(str, m['feature_map']))})"
    def faithful(m):
        return m["insertion_auc"] - m["deletion_auc"]
    best = max(rows, key=lambda r: faithful(r[1]))
    worst = min(rows, key=lambda r: faithful(r[1]))
    focused = max(rows, key=lambda r: r[1]["top10_mass_share"])
    flat = [label(c, m) for c, m in rows if m["feature_map"] == [1, 1]]
    lines = [f"Most faithful maps: {label(*best)}, insertion - deletion AUC {faithful(best[1]):+.3f}; "
             f"least: {label(*worst)}, {faithful(worst[1]):+.3f}.",
             f"Most focused maps: {label(*focused)}, {focused[1]['top10_mass_share']:.0%} of the mass in the top 10% of pixels."]
    if flat:
        lines.append("At these inputs the last conv map is 1x1, so Grad-CAM cannot localise at all "
                     f"(one value spread over the image): {', '.join(flat)}.")
    return "Resolution study (generated from the Grad-CAM figures above)\n\n" + "\n".join(lines)


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
                and extra.get("derived") == derived):
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
