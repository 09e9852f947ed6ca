"""ResNet-18 low-rank head (companion study): a fresh ``fc`` trained on the frozen pretrained
backbone (``resnet_head``), then singular-value spectra of chosen layers (k95 as count and
fraction) and ``fc`` replaced by two Linears at each keep ratio of its rank, each recovered
by fine-tuning the head on the frozen backbone (``resnet_lowrank``). Timing per batch is a
measurement of every run, not cached: only the layer shapes matter for it."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

from .. import strategies
from ..building import Trained, fit_args, head_only
from ..compression.lowrank import factorize_linear, named_spectra, ratio_rank
from ..compression.plots import plot_cumulative_energy
from ..context import Artifact, Case, Context, Recipe, model_payload
from ..deploy.latency import eager_latency
from ..metrics import CPU_SHARE, accuracy, figure, info, ms
from ..models import ImageClassifier, count_parameters
from ..registry import (
    TRAINED,
    Analysis,
    Table,
    Technique,
    only,
    register,
    register_analysis,
    register_study,
    register_table,
    require,
)
from ..seeding import derive_seed
from ..training import ended_accuracy, evaluate

MODEL, STUDY, BASE = "resnet18", "lowrank", "resnet_head"
ANALYSIS_KEYS = ("layers", "energy", "keep_ratios")
register_study(STUDY, {"layers": ["layer2.0.conv1", "fc"], "energy": 0.95, "keep_ratios": [0.5, 0.2],
                       "batch_size": 64, "warmup": 5, "rounds": 50, "threads": 1})


class LowRank:
    """``fc`` factored at each keep ratio of its rank, each recovered on the frozen backbone."""

    @staticmethod
    def key(ctx: Context, case: Case) -> Recipe:
        return Recipe({"params": {k: ctx.profile.studies[STUDY][k] for k in ANALYSIS_KEYS},
                       "retrain": dataclasses.asdict(ctx.profile.train_config(case.technique, case.dataset))})

    @staticmethod
    def build(ctx: Context, case: Case, key) -> dict[str, Any]:
        base = ctx.artifact(case.dataset, BASE)
        cfg = ctx.profile.train_config(case.technique, case.dataset)
        seed, params, label = key.seed, key.recipe["params"], case.id
        data = ctx.data_at(case.dataset, base.meta["input_size"])
        on_test = lambda m: evaluate(m, data.test, ctx.profile.eval_batch_size, ctx.execution)  # noqa: E731
        variants, models = [], []
        for keep in params["keep_ratios"]:
            model = with_head_rank(base.model, ratio_rank(base.model.head, keep))
            before = on_test(model)
            history = strategies.partial_finetune(model, data, cfg, features=ctx.features,
                                                  **fit_args(ctx, derive_seed(seed, keep), f"{label} keep {keep:g}"))
            epochs = [h.as_dict() for h in history]
            models.append(model)
            variants.append({"keep": keep, "rank": model.head.rank, "head_params": count_parameters(model.head),
                             "params": count_parameters(model), "accuracy_before_recovery": before,
                             "accuracy": ended_accuracy(epochs, before), "epochs": epochs})
        metrics = {"dense_accuracy": on_test(base.model), "head_shape": list(base.model.head.weight.shape),
                   "head_params_before": count_parameters(base.model.head),
                   "params_before": count_parameters(base.model), "variants": variants,
                   **_spectra(ctx, base.model, label, params)}
        meta = {**{k: v for k, v in base.meta.items() if k != "train_seconds"}, "history": variants[0]["epochs"],
                "train": dataclasses.asdict(cfg), "metrics": metrics, "record": {"base": BASE, "derived": STUDY}}
        return model_payload(models[0], meta, arch={"head_rank": variants[0]["rank"]})


def measure(ctx: Context, case: Case, artifact: Artifact) -> dict[str, Any]:
    """CPU time per batch of the dense model and of each low-rank head, in alternating rounds."""
    base = ctx.artifact(case.dataset, BASE).model
    models = {"dense": base}
    for variant in artifact.meta["metrics"]["variants"]:
        models[variant_name(variant["keep"])] = with_head_rank(base, variant["rank"])
    p = ctx.profile.studies[STUDY]
    timed = eager_latency(models, artifact.meta["input_size"], [p["batch_size"]], p["warmup"], p["rounds"],
                          p["threads"], ctx.timer)
    return {**timed, "threads": p["threads"], "rounds": p["rounds"], "batch_size": p["batch_size"]}


def _spectra(ctx: Context, model: ImageClassifier, label: str, params: dict) -> dict[str, Any]:
    spectra = named_spectra(model.net, params["layers"], params["energy"])
    plot = plot_cumulative_energy(spectra, ctx.cache_root / "spectra" / f"{label}.png", label, params["energy"])
    summary = [{k: layer[k] for k in ("layer", "shape", "rank", "k95", "k95_fraction")} for layer in spectra]
    return {"spectra": summary, "spectra_plot": str(plot)}


def variant_name(keep: float) -> str:
    return f"keep{round(keep * 100)}"


def with_head_rank(model: ImageClassifier, rank: int) -> ImageClassifier:
    low_rank = copy.deepcopy(model)
    low_rank.set_head(factorize_linear(model.head, rank))
    return low_rank


def check_head(m: dict, case: Case) -> None:
    # a frozen ResNet-18 backbone with a fresh fc: 11.2 M parameters whatever the classes
    require(m["parameters"] > 11_000_000, f"{m['parameters']} parameters: not a whole ResNet-18")


def check_lowrank(m: dict, case: Case) -> None:
    ranks = [v["rank"] for v in m["variants"]]
    require(ranks == sorted(ranks, reverse=True) and all(1 <= r < min(m["head_shape"]) for r in ranks),
            f"ranks {ranks} must fall with the keep ratio, below {min(m['head_shape'])}")
    out_features, in_features = m["head_shape"]
    for v in m["variants"]:
        # fc (out x in, with bias) becomes in x rank (no bias) and rank x out (with bias)
        expected = m["params_before"] - out_features * in_features + v["rank"] * (in_features + out_features)
        require(v["params"] == expected, f"rank {v['rank']}: {v['params']} parameters, expected {expected}")
    require(set(m["latency"]) == {f"{name}_b{m['batch_size']}_ms" for name in
                                  ["dense"] + [variant_name(v["keep"]) for v in m["variants"]]},
            f"latency keys {sorted(m['latency'])}")


def spectrum_rows(found) -> list[dict]:
    return [{"layer": s["layer"], "matrix": f"{s['shape'][0]}x{s['shape'][1]}", "k95": s["k95"],
             "k95 fraction": f"{s['k95_fraction']:.1%}"} for s in only(found, "resnet_lowrank").get("spectra", [])]


def lowrank_rows(found) -> list[dict]:
    m = only(found, "resnet_lowrank")
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
              f"ms per batch of {batch}": timed(variant_name(v["keep"]))} for v in m["variants"]]
    return rows


def lowrank_note(found) -> str:
    """Why compressing only the head barely changes latency, from the measured numbers."""
    m = only(found, "resnet_lowrank")
    batch, latency = m.get("batch_size"), m.get("latency", {})
    dense = latency.get(f"dense_b{batch}_ms")
    if not dense or not m.get("variants"):
        return ""
    smallest = m["variants"][-1]
    small = latency.get(f"{variant_name(smallest['keep'])}_b{batch}_ms")
    saved = m["head_params_before"] - smallest["head_params"]
    return (f"The fc layer holds {m['head_params_before']:,} of {m['params_before']:,} parameters "
            f"({m['head_params_before'] / m['params_before']:.2%}); keeping {smallest['keep']:g} of its rank saves "
            f"{saved:,} parameters, and the time per batch moves from {dense:.1f} to {small:.1f} ms: "
            "the convolutions, untouched, do nearly all the work.")


LOWRANK_METRICS = (
    accuracy("dense_accuracy", "the frozen-backbone model's test accuracy", gated=False),
    info("variants", "list", "each rank kept: parameters, accuracy before and after recovery"),
    info("head_shape", "list"), info("head_params_before", "count"), info("params_before", "count"),
    info("spectra", "list", "shape, rank and k95 of each analysed layer"), figure("spectra_plot"),
    ms("latency.*_ms", "median ms per batch of the dense model and each low-rank head"),
    info("latency_iqr.*", "ms"), CPU_SHARE, info("threads", "count"), info("rounds", "count"),
    info("batch_size", "count"),
)
register(Technique(BASE, TRAINED, "ResNet-18, head on frozen backbone", study=STUDY, model=MODEL,
                   builder=Trained(head_only, pretrained=True), check=check_head))
register(Technique("resnet_lowrank", TRAINED, "ResNet-18, low-rank head", study=STUDY, model=MODEL,
                   builder=LowRank(), measure=measure, check=check_lowrank, needs=(BASE,), metrics=LOWRANK_METRICS))
register_table(Table("ResNet-18 singular-value spectra (k95: components holding 95% of the energy)",
                     ("resnet_lowrank",), spectrum_rows))
register_table(Table("ResNet-18 low-rank fc (backbone frozen; CPU time per batch, 1 thread)", ("resnet_lowrank",),
                     lowrank_rows))
register_analysis(Analysis(("resnet_lowrank",), lowrank_note))
