"""How a training fit, read from its per-epoch history: underfit, overfit, balanced, or
undetermined. Every rule and threshold is here.

The gap is training accuracy (on a fixed sample of the training split, scored in eval mode)
minus held-out accuracy (the validation split where the recipe has one, else the test split).
"""
from __future__ import annotations

from typing import Any

MIN_EPOCHS = 3          # fewer: a curve says nothing about its trend
OVERFIT_GAP = 0.10      # training accuracy this far above held-out accuracy: it learned its training images
GAP_GROWTH = 0.02       # a smaller gap (above half of OVERFIT_GAP) opening this much over the second half ...
HELD_OUT_FALL = 0.02    # ... while held-out accuracy falls this far below its best: overfitting has begun
UNDERFIT_TRAIN = 0.80   # training accuracy below this with a small gap: it did not fit even its own images
STILL_FALLING = 0.02    # the last epoch cut the training loss by more than this share: it had not converged
VERDICTS = ("underfit", "overfit", "balanced", "undetermined")


def diagnose(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"verdict", "reason", "train_accuracy", "held_out_accuracy", "held_out", "gap",
    "loss_falling"}`` of a training history (``EpochStats.as_dict`` rows)."""
    if len(epochs) < MIN_EPOCHS:
        return {"verdict": "undetermined", "reason": f"{len(epochs)} epoch(s): a trend needs {MIN_EPOCHS}"}
    scored = [e for e in epochs if e.get("train_accuracy") is not None]
    if len(scored) < MIN_EPOCHS:
        return {"verdict": "undetermined", "reason": "no training accuracy recorded (a record of older code)"}
    held_out = "val_accuracy" if all("val_accuracy" in e for e in scored) else "test_accuracy"
    gaps = [e["train_accuracy"] - e[held_out] for e in scored]
    last, middle = scored[-1], scored[len(scored) // 2 - 1]
    growth = gaps[-1] - gaps[len(scored) // 2 - 1]
    fall = max(e[held_out] for e in scored) - last[held_out]
    losses = [e["train_loss"] for e in scored]
    falling = losses[-2] > 0 and (losses[-2] - losses[-1]) / losses[-2] > STILL_FALLING
    facts = {"train_accuracy": last["train_accuracy"], "held_out_accuracy": last[held_out],
             "held_out": held_out.removesuffix("_accuracy"), "gap": gaps[-1], "loss_falling": falling}
    trend = (f"opening by {growth * 100:.1f} points since epoch {middle['epoch']}" if growth > GAP_GROWTH
             else "steady" if abs(growth) <= GAP_GROWTH else f"closing by {-growth * 100:.1f} points")
    if fall > HELD_OUT_FALL:
        trend += f", held-out accuracy {fall * 100:.1f} points below its best"
    beginning = gaps[-1] > OVERFIT_GAP / 2 and growth > GAP_GROWTH and fall > HELD_OUT_FALL
    if gaps[-1] > OVERFIT_GAP or beginning:
        return {**facts, "verdict": "overfit",
                "reason": f"training accuracy {gaps[-1] * 100:.1f} points above held-out, {trend}"}
    if last["train_accuracy"] < UNDERFIT_TRAIN:
        still = "training loss still falling" if falling else "training loss flat"
        return {**facts, "verdict": "underfit",
                "reason": f"training accuracy {last['train_accuracy']:.3f}, close to held-out ({still})"}
    still = "; training loss still falling: more epochs may help" if falling else ""
    return {**facts, "verdict": "balanced", "reason": f"gap {gaps[-1] * 100:.1f} points, {trend}{still}"}
