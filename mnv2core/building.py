"""Building a trained technique's artifact: its cache spec, the seeded training from fresh or
upstream weights, and its payload. Every technique trained from its own recipe goes through
``train_artifact``; compressions go through ``compression.retraining``."""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Callable

from . import strategies
from .context import Artifact, Case, Context, cpu_state, model_payload

Strategy = Callable[..., list]  # (model, data, cfg, **fit_args) -> per-epoch history


def train_artifact(ctx: Context, case: Case, strategy: Strategy, *, pretrained: bool = False,
                   start: Artifact | None = None, upstream: dict[str, str] | None = None,
                   tags: dict[str, str] | None = None) -> Artifact:
    """Build (or load) ``case``'s model: fresh weights (the profile's pretrained ones when
    ``pretrained``, else random) or a copy of ``start``, trained by ``strategy`` with the
    technique's recipe. ``upstream``: the cache keys of the artifacts it was built from."""
    cfg = ctx.profile.train_config(case.technique, case.dataset)
    size = ctx.input_size(case.dataset, case.technique)
    splits = ctx.dataset(case.dataset)
    seed = ctx.seed_for(case.dataset, case.technique)
    upstream = upstream or {}
    spec = {"kind": case.technique, "model": case.model, "network": ctx.profile.model(case.model).identity(),
            "data": splits.provenance["fingerprint"],
            "classes": splits.num_classes, "input_size": size, "train": dataclasses.asdict(cfg), "seed": seed,
            "execution": ctx.execution.spec(), "upstream": upstream, "payload": "with-start-state",
            "weights": None if start else ctx.start_fingerprint(case.model, size, pretrained)}
    label = f"{case.dataset}-{case.model}-{case.technique}"

    def build() -> dict[str, Any]:
        if start is None:
            model, weights = ctx.start_model(case.model, splits.num_classes, size, pretrained)
        else:
            model, weights = copy.deepcopy(start.model), start.meta["weights"]
        model = ctx.execution.prepare(model)
        start_state = cpu_state(model)
        started = time.perf_counter()
        history = strategy(model, ctx.data_at(case.dataset, size), cfg, **fit_args(ctx, seed, label))
        meta = {"history": [h.as_dict() for h in history], "weights": weights, "input_size": size,
                "train_seconds": time.perf_counter() - started, "upstream": upstream,
                "train": dataclasses.asdict(cfg), "record": dict(tags or {})}
        return model_payload(model, meta, start_state=start_state)

    return ctx.fetch(label, spec, seed, build)


def fit_args(ctx: Context, seed: int, label: str) -> dict[str, Any]:
    """The keyword arguments every strategy passes on to ``training.fit``."""
    return {"seed": seed, "label": label, "eval_batch_size": ctx.profile.eval_batch_size, "execution": ctx.execution}


def head_only(ctx: Context) -> Strategy:
    """Partial fine-tuning, on the frozen backbone's cached features where it can."""
    return lambda model, data, cfg, **kw: strategies.partial_finetune(model, data, cfg, features=ctx.features, **kw)
