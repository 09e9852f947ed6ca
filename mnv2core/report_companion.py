"""Report tables of the companion studies (VGG16 + separation index, light digit models,
ResNet-18 low-rank head): rows built from a results document's case items."""
from __future__ import annotations

from typing import Any, Callable

LIGHT_TECHNIQUES = ("light_cnn", "light_mlp", "light_lenet", "light_ultra", "light_medium")
VGG_STEPS = (("vgg_train", "trained end to end"), ("vgg_head", "classifier retrained, features frozen"),
             ("vgg_si", "compressed by separation index"))


def companion_tables(dataset: str, items: dict) -> list[tuple[str, list[dict]]]:
    """(title, rows) of every companion table with results for ``dataset``."""
    metrics = _metrics_by_technique(dataset, items)
    tables = [(title, build(metrics)) for title, build in TABLES]
    return [(title, rows) for title, rows in tables if rows]


def _metrics_by_technique(dataset: str, items: dict) -> dict[str, dict[str, Any]]:
    return {extra["technique"]: extra.get("metrics", {}) for case, extra in items.items()
            if case.rsplit("-", 2)[0] == dataset and "technique" in extra}


def _lr_search_rows(metrics: dict) -> list[dict]:
    m = metrics.get("vgg_train", {})
    return [{"lr": f"{t['lr']:g}", "lr step (epochs)": t["step_epochs"], "search epochs": t["epochs"],
             "val acc": f"{t['val_accuracy']:.3f}",
             "chosen": "*" if (t["lr"], t["step_epochs"]) == (m["chosen_lr"], m["chosen_step_epochs"]) else ""}
            for t in m.get("lr_search", [])]


def _vgg_rows(metrics: dict) -> list[dict]:
    rows = []
    for technique, step in VGG_STEPS:
        m = metrics.get(technique)
        if not m or "accuracy" not in m:
            continue
        rows.append({"VGG16": step, "test acc": f"{m['accuracy']:.3f}", "val acc": f"{m.get('val_accuracy', 0):.3f}",
                     "params (M)": f"{m['parameters'] / 1e6:.3f}",
                     "conv layers": f"{m['layers_kept']} of {m['conv_layers']}" if "layers_kept" in m else "13",
                     "last-layer features": (f"{m['features_selected']} of {m['channels_available']}"
                                             if "features_selected" in m else "512"),
                     "curves": m.get("curves_plot", "")})
    return rows


def _si_layer_rows(metrics: dict) -> list[dict]:
    m = metrics.get("vgg_si", {})
    if "si_train" not in m:
        return []
    return [{"conv layer": i + 1, "SI train": f"{train:.3f}", "SI test": f"{test:.3f}",
             "center SI train": f"{centre:.3f}", "kept": "yes" if i < m["layers_kept"] else ""}
            for i, (train, test, centre) in enumerate(zip(m["si_train"], m["si_test"], m["center_si_train"]))]


def _si_feature_rows(metrics: dict) -> list[dict]:
    m = metrics.get("vgg_si", {})
    return [{"features": k + 1, "added filter": s["channel"], "SI": f"{s['si']:.3f}"}
            for k, s in enumerate(m.get("selection", []))]


def _light_rows(metrics: dict) -> list[dict]:
    rows = []
    for technique in LIGHT_TECHNIQUES:
        m = metrics.get(technique)
        if not m or "accuracy" not in m:
            continue
        row = {"model": technique.removeprefix("light_"), "params": f"{m['parameters']:,}",
               "test acc": f"{m['accuracy']:.4f}"}
        row.update({f"CPU ms, batch {key.split('_b')[1].removesuffix('_ms')}": f"{value:.3f}"
                    for key, value in m.get("latency", {}).items()})
        rows.append(row)
    return rows


def _spectrum_rows(metrics: dict) -> list[dict]:
    m = metrics.get("resnet_lowrank", {})
    return [{"layer": s["layer"], "matrix": f"{s['shape'][0]}x{s['shape'][1]}", "k95": s["k95"],
             "k95 fraction": f"{s['k95_fraction']:.1%}"} for s in m.get("spectra", [])]


def _lowrank_rows(metrics: dict) -> list[dict]:
    m = metrics.get("resnet_lowrank", {})
    if "variants" not in m:
        return []
    latency, batch = m.get("latency", {}), m.get("batch_size")
    timed = lambda name: f"{latency[f'{name}_b{batch}_ms']:.1f}" if f"{name}_b{batch}_ms" in latency else "not run"  # noqa: E731
    rows = [{"fc": f"dense {m['head_shape'][0]}x{m['head_shape'][1]}", "rank": "", "fc params": m["head_params_before"],
             "model params": f"{m['params_before']:,}", "test acc before recovery": "",
             "test acc": f"{m['dense_accuracy']:.3f}", f"ms per batch of {batch}": timed("dense")}]
    rows += [{"fc": f"keep {v['keep']:g}", "rank": v["rank"], "fc params": v["head_params"],
              "model params": f"{v['params']:,}", "test acc before recovery": f"{v['accuracy_before_recovery']:.3f}",
              "test acc": f"{v['accuracy']:.3f}",
              f"ms per batch of {batch}": timed(f"keep{round(v['keep'] * 100)}")} for v in m["variants"]]
    return rows


TABLES: list[tuple[str, Callable[[dict], list[dict]]]] = [
    ("VGG16: learning-rate search (scored on the validation split)", _lr_search_rows),
    ("VGG16 and its separation-index (SI) compression", _vgg_rows),
    ("Separation index of every conv layer's output", _si_layer_rows),
    ("SI of the greedily selected filters of the last kept layer", _si_feature_rows),
    ("Light models on digits: size, accuracy, CPU latency (1 thread, median)", _light_rows),
    ("ResNet-18 singular-value spectra (k95: components holding 95% of the energy)", _spectrum_rows),
    ("ResNet-18 low-rank fc (backbone frozen; CPU time per batch, 1 thread)", _lowrank_rows),
]


def lowrank_note(metrics: dict) -> str:
    """Why compressing only the head barely changes latency, from the measured numbers."""
    m = metrics.get("resnet_lowrank", {})
    batch, latency = m.get("batch_size"), m.get("latency", {})
    dense = latency.get(f"dense_b{batch}_ms")
    if not dense or not m.get("variants"):
        return ""
    smallest = m["variants"][-1]
    small = latency.get(f"keep{round(smallest['keep'] * 100)}_b{batch}_ms")
    saved = m["head_params_before"] - smallest["head_params"]
    return (f"The fc layer holds {m['head_params_before']:,} of {m['params_before']:,} parameters "
            f"({m['head_params_before'] / m['params_before']:.2%}); keeping {smallest['keep']:g} of its rank saves "
            f"{saved:,} parameters, and the time per batch moves from {dense:.1f} to {small:.1f} ms: "
            "the convolutions, untouched, do nearly all the work.")
