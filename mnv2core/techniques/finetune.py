"""Partial fine-tuning (a new classifier on the frozen pretrained backbone) and full
fine-tuning (everything unfrozen after it, with a small learning rate)."""
from __future__ import annotations

from .. import strategies
from ..building import head_only, train_artifact
from ..context import Artifact, Case, Context
from ..registry import TRAINED, Technique, register, register_study

MODEL = "mobilenet_v2"
register_study("mobilenet")


def build_partial(ctx: Context, case: Case) -> Artifact:
    return train_artifact(ctx, case, head_only(ctx), pretrained=True)


def build_full(ctx: Context, case: Case) -> Artifact:
    partial = ctx.artifact(case.dataset, "partial_ft")
    return train_artifact(ctx, case, strategies.full_finetune, start=partial, upstream={"partial_ft": partial.key})


register(Technique("partial_ft", TRAINED, "Partial Tuning", model=MODEL, build=build_partial))
register(Technique("full_ft", TRAINED, "Full Fine-Tuning", model=MODEL, build=build_full, needs=("partial_ft",)))
