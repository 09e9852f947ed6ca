"""FX graph-mode int8 (x86 backend) of a base model: accuracy against its fp32 twin."""
from __future__ import annotations

from typing import Any

from ..context import Artifact, Case, Context
from ..deploy.latency import cpu_copy
from ..deploy.twins import Int8Parameters, calibration, int8_model, test_set
from ..metrics import LOWER, Metric, accuracy, info
from ..registry import DEPLOYMENT, Analysis, Technique, present, register, register_analysis, require
from ..training import evaluate

METRICS = (
    accuracy(doc="test accuracy of the FX int8 model", runtime="FX int8"),
    accuracy("fp32_accuracy", "the same test set through the fp32 base on the CPU", gated=False),
    Metric("int8_drop", "fraction", LOWER, True, "accuracy", doc="fp32 minus int8 accuracy"),
    info("max_drop", "fraction", "the largest drop the check allows (the profile's)"),
    info("calibration_images", "count"), info("backend", "text"),
)


def measure(ctx: Context, case: Case, base: Artifact) -> dict[str, Any]:
    test = test_set(ctx, case, base, "cpu")
    fp32 = evaluate(cpu_copy(base.model), test, ctx.profile.eval_batch_size)
    int8 = evaluate(int8_model(ctx, case, base), test, ctx.profile.eval_batch_size)
    return {"accuracy": int8, "fp32_accuracy": fp32, "int8_drop": fp32 - int8,
            "max_drop": ctx.profile.deployments[case.method]["max_drop"],
            "calibration_images": sum(len(b) for b in calibration(ctx, case, base)), "backend": "fx x86"}


def check(m: dict, case: Case) -> None:
    require(m["int8_drop"] <= m["max_drop"], f"int8 lost {m['int8_drop']:.3f}, more than {m['max_drop']}")


def rows(found) -> list[dict]:
    return [{"model": base, "fp32 acc": f"{m['fp32_accuracy']:.3f}", "int8 acc": f"{m['accuracy']:.3f}",
             "int8 - fp32 (points)": f"{-m['int8_drop'] * 100:+.1f}", "calibration images": m["calibration_images"]}
            for base, m in found if "fp32_accuracy" in m]


register(Technique("int8", DEPLOYMENT, "FX int8", measure=measure, reusable=True, check=check, params=Int8Parameters,
                   thresholds=("max_drop",), metrics=METRICS))
present("int8", table=("Int8 post-training quantization (FX, x86)", rows), summary_column=("int8 acc", "accuracy"))


def steadier_under_int8(found: dict) -> str:
    """The study's question, asked of every model with several bases (e.g. full fine-tuning
    and distillation): which of them loses least under int8?"""
    by_model: dict[str, dict[str, float]] = {}
    for label, m in found["int8"]:
        if "int8_drop" in m:
            model, _, base = label.partition(" ")
            by_model.setdefault(model, {})[base] = m["int8_drop"]
    lines = []
    for model, drops in by_model.items():
        if len(drops) < 2:
            continue
        least = min(round(drop, 4) for drop in drops.values())
        steadiest = [base for base, drop in drops.items() if round(drop, 4) == least]
        others = ", ".join(f"{-drop * 100:+.1f} for {base}" for base, drop in drops.items() if base not in steadiest)
        lines.append(f"More stable under int8, {model}: {' and '.join(steadiest)}"
                     f"{' (a tie)' if len(steadiest) > 1 else ''} (accuracy change {-least * 100:+.1f} points"
                     f"{f', against {others}' if others else ''}).")
    return "\n".join(lines)


register_analysis(Analysis(("int8",), steadier_under_int8))
