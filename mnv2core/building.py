"""Building a trained technique's artifact: the key of its recipe, and the seeded training
from fresh or upstream weights into its payload. Every technique trained from its own recipe
builds through ``Trained``; compressions through ``compression.retraining``."""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import strategies
from .context import Case, Context, Recipe, cpu_state, model_payload
from .keys import ArtifactKey
from .profiles import TrainConfig

Strategy = Callable[..., list]  # (model, data, cfg, **fit_args) -> per-epoch history


@dataclass(frozen=True)
class Trained:
    """A model trained by ``strategy(ctx, case)`` with its technique's recipe, from fresh
    weights (the profile's pretrained ones when ``pretrained``, else random) or from the model
    of the upstream technique ``start`` (one of its ``needs``). ``precondition`` checks the
    profile when the key is made (before anything is built); ``tags`` go in its records."""

    strategy: Callable[[Context, Case], Strategy]
    pretrained: bool = False
    start: str | None = None
    precondition: Callable[[Context, Case], None] | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def key(self, ctx: Context, case: Case) -> Recipe:
        if self.precondition is not None:
            self.precondition(ctx, case)
        size = ctx.input_size(case.dataset, case.technique)
        cfg = recipe_of(ctx, case)
        recipe = {"input_size": size, "train": dataclasses.asdict(cfg), "payload": "with-start-state", "weights": None}
        if self.start is None:
            weights = ctx.start_fingerprint(case.model, size, self.pretrained)
            if isinstance(weights, ArtifactKey):
                return Recipe(recipe, {"weights": weights})
            recipe["weights"] = weights
        return Recipe(recipe)

    def build(self, ctx: Context, case: Case, key: ArtifactKey) -> dict[str, Any]:
        cfg = recipe_of(ctx, case)
        size = key.recipe["input_size"]
        num_classes = ctx.dataset(case.dataset).num_classes
        if self.start is None:
            model, weights = ctx.start_model(case.model, num_classes, size, self.pretrained)
        else:
            start = ctx.artifact(case.dataset, self.start, case.model)
            model, weights = copy.deepcopy(start.model), start.meta["weights"]
        model = ctx.execution.prepare(model)
        start_state = cpu_state(model)
        started = time.perf_counter()
        history = self.strategy(ctx, case)(model, ctx.data_at(case.dataset, size), cfg,
                                           **fit_args(ctx, key.seed, case.id))
        meta = {"history": [h.as_dict() for h in history], "weights": weights, "input_size": size,
                "train_seconds": time.perf_counter() - started, "train": dataclasses.asdict(cfg),
                "record": dict(self.tags)}
        return model_payload(model, meta, start_state=start_state)


def recipe_of(ctx: Context, case: Case) -> TrainConfig:
    """The case's recipe; no epochs for a deploy-only model (an ONNX file is never trained)."""
    cfg = ctx.profile.train_config(case.technique, case.dataset)
    return dataclasses.replace(cfg, epochs=0) if ctx.profile.model(case.model).deploy_only else cfg


def fit_args(ctx: Context, seed: int, label: str) -> dict[str, Any]:
    """The keyword arguments every strategy passes on to ``training.fit``."""
    return {"seed": seed, "label": label, "eval_batch_size": ctx.profile.eval_batch_size, "execution": ctx.execution}


def plain(strategy: Strategy) -> Callable[[Context, Case], Strategy]:
    """A strategy that needs nothing of the run."""
    return lambda ctx, case: strategy


def head_only(ctx: Context, case: Case | None = None) -> Strategy:
    """Partial fine-tuning, on the frozen backbone's cached features where it can."""
    return lambda model, data, cfg, **kw: strategies.partial_finetune(model, data, cfg, features=ctx.features, **kw)
