"""A compression's cached artifact: the base model (full fine-tuned or distilled) compressed
by a technique's ``make`` and retrained with the base's own strategy (distillation stays
distillation) on the compression's retraining recipe."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..context import Artifact, Case, Context, Recipe, model_payload
from ..keys import ArtifactKey
from ..models import ImageClassifier
from ..profiles import TrainConfig, derived_technique
from ..seeding import derive_seed
from ..strategies import train_all
from ..training import evaluate

# make(job, params) -> (model, arch changes or None, metrics, per-epoch history)
Make = Callable[["Retraining", dict[str, Any]], tuple[ImageClassifier, dict | None, dict[str, Any], list[dict]]]


@dataclasses.dataclass
class Retraining:
    """One compression build: the base model and how to evaluate and retrain on its data."""

    ctx: Context
    case: Case
    base: Artifact
    cfg: TrainConfig
    seed: int
    label: str

    @property
    def input_size(self) -> int:
        return self.base.meta["input_size"]

    @property
    def data(self):
        return self.ctx.data_at(self.case.dataset, self.input_size)

    def evaluate(self, model) -> float:
        return evaluate(model, self.data.test, self.ctx.profile.eval_batch_size, self.ctx.execution)

    def base_accuracy(self) -> float:
        return self.evaluate(self.base.model)

    def upstream(self, method: str) -> Artifact:
        """The artifact of another compression of the same base (the lottery's pruned model)."""
        return self.ctx.artifact(self.case.dataset, derived_technique(self.case.base, method), self.case.model)

    def retrain(self, model, step: str = "") -> list[dict]:
        """Train ``model`` in place with the base's strategy and the retraining recipe (seeded
        per step, so every step is reproducible on its own)."""
        make_strategy = self.ctx.catalogue.get(self.case.base).retrain
        strategy = make_strategy(self.ctx, self.case.dataset) if make_strategy else train_all
        history = strategy(model, self.data, self.cfg, seed=derive_seed(self.seed, step),
                           label=f"{self.label} {step}".strip(), eval_batch_size=self.ctx.profile.eval_batch_size,
                           execution=self.ctx.execution)
        return [h.as_dict() for h in history]


@dataclasses.dataclass(frozen=True)
class Compression:
    """A compression's builder: its base compressed by ``make`` with the profile's parameters,
    then retrained. Its key holds the parameters and the retraining recipe; the study adds the
    base's key and those of what the technique ``needs`` (the lottery's pruned model)."""

    make: Make

    def key(self, ctx: Context, case: Case) -> Recipe:
        compression = ctx.profile.compressions[case.method]
        cfg = ctx.profile.retrain_config(compression, case.base, case.dataset)
        return Recipe({"params": compression.params, "retrain": dataclasses.asdict(cfg)})

    def build(self, ctx: Context, case: Case, key: ArtifactKey) -> dict[str, Any]:
        base = ctx.artifact(case.dataset, case.base, case.model)
        compression = ctx.profile.compressions[case.method]
        cfg = ctx.profile.retrain_config(compression, case.base, case.dataset)
        job = Retraining(ctx, case, base, cfg, key.seed, case.id)
        model, arch, metrics, history = self.make(job, compression.params)
        meta = {**{k: v for k, v in base.meta.items() if k != "train_seconds"}, "history": history,
                "train": dataclasses.asdict(cfg), "metrics": metrics,
                "record": {"base": case.base, "derived": case.method}}
        return model_payload(model, meta, arch=arch)


def compressing(make: Make) -> Compression:
    """A compression technique's builder: ``make`` applied to its base, then retrained."""
    return Compression(make)
