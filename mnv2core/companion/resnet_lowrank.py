"""ResNet-18 low-rank head, as a cached artifact of the study: singular-value spectra of chosen
layers (k95 as count and fraction), ``fc`` replaced by two Linears at each keep ratio of its
rank, each recovered by fine-tuning the head on the frozen backbone. Timing per batch is a
measurement of every run, not cached: only the layer shapes matter for it."""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from .. import strategies
from ..compression.lowrank import factorize_linear, named_spectra, ratio_rank
from ..compression.plots import plot_cumulative_energy
from ..deploy.latency import eager_latency
from ..models import ImageClassifier, count_parameters
from ..seeding import derive_seed
from ..training import evaluate

if TYPE_CHECKING:
    from ..study import Artifact, Study

BASE = "resnet_head"
TECHNIQUE = "resnet_lowrank"
ANALYSIS_KEYS = ("layers", "energy", "keep_ratios")


class LowRankCases:
    def __init__(self, study: "Study"):
        self.study = study
        self.params = study.profile.studies.get("lowrank", {})

    def handles(self, technique: str) -> bool:
        return technique == TECHNIQUE

    def artifact(self, dataset: str, technique: str) -> "Artifact":
        base = self.study.artifact(dataset, BASE)
        cfg = self.study.profile.train_config(TECHNIQUE, dataset)
        seed = self.study.seed_for(dataset, TECHNIQUE)
        params = {k: self.params[k] for k in ANALYSIS_KEYS}
        spec = {"kind": TECHNIQUE, "base": base.key, "params": params, "retrain": dataclasses.asdict(cfg),
                "seed": seed, "execution": self.study.execution.spec()}
        label = f"{dataset}-{base.model.name}-{TECHNIQUE}"

        def build() -> dict[str, Any]:
            started = time.perf_counter()
            data = self.study.data_at(dataset, base.meta["input_size"])
            evaluate_on_test = lambda m: evaluate(m, data.test, self.study.profile.eval_batch_size, self.study.execution)  # noqa: E731
            variants, models = [], []
            for keep in params["keep_ratios"]:
                model, variant = self._recovered(base.model, keep, data, cfg, derive_seed(seed, keep), label, evaluate_on_test)
                models.append(model)
                variants.append(variant)
            metrics = {"dense_accuracy": evaluate_on_test(base.model), "head_shape": list(base.model.head.weight.shape),
                       "head_params_before": count_parameters(base.model.head),
                       "params_before": count_parameters(base.model), "variants": variants,
                       **self._spectra(base.model, label)}
            meta = {**base.meta, "history": variants[0]["epochs"], "train_seconds": time.perf_counter() - started,
                    "train": dataclasses.asdict(cfg), "upstream": {BASE: base.key}, "metrics": metrics,
                    "record": {"base": BASE, "derived": "lowrank"}}
            return {"model": base.model.name, "num_classes": base.model.head.out_features,
                    "state_dict": {k: v.detach().cpu() for k, v in models[0].state_dict().items()},
                    "arch": {"head_rank": variants[0]["rank"]}, "meta": meta}

        return self.study.cached(label, spec, build)

    def measure(self, dataset: str, artifact: "Artifact") -> dict[str, Any]:
        """CPU time per batch of the dense model and of each low-rank head, back to back."""
        base = self.study.artifact(dataset, BASE).model
        models = {"dense": base}
        for variant in artifact.meta["metrics"]["variants"]:
            models[variant_name(variant["keep"])] = _with_head_rank(base, variant["rank"])
        p = self.params
        timed = eager_latency(models, artifact.meta["input_size"], [p["batch_size"]], p["warmup"], p["rounds"],
                              p["threads"], self.study.timer)
        return {**timed, "threads": p["threads"], "rounds": p["rounds"], "batch_size": p["batch_size"]}

    def _recovered(self, base: ImageClassifier, keep: float, data, cfg, seed: int, label: str, evaluate_on_test):
        model = _with_head_rank(base, ratio_rank(base.head, keep))
        before = evaluate_on_test(model)
        history = strategies.partial_finetune(model, data, cfg, seed=seed, label=f"{label} keep {keep:g}",
                                              eval_batch_size=self.study.profile.eval_batch_size,
                                              execution=self.study.execution, features=self.study.features)
        epochs = [h.as_dict() for h in history]
        return model, {"keep": keep, "rank": model.head.rank, "head_params": count_parameters(model.head),
                       "params": count_parameters(model), "accuracy_before_recovery": before,
                       "accuracy": epochs[-1]["test_accuracy"], "epochs": epochs}

    def _spectra(self, model: ImageClassifier, label: str) -> dict[str, Any]:
        spectra = named_spectra(model.net, self.params["layers"], self.params["energy"])
        plot = plot_cumulative_energy(spectra, self.study.cache.root / "spectra" / f"{label}.png", label,
                                      self.params["energy"])
        summary = [{k: layer[k] for k in ("layer", "shape", "rank", "k95", "k95_fraction")} for layer in spectra]
        return {"spectra": summary, "spectra_plot": str(plot)}


def variant_name(keep: float) -> str:
    return f"keep{round(keep * 100)}"


def _with_head_rank(model: ImageClassifier, rank: int) -> ImageClassifier:
    low_rank = copy.deepcopy(model)
    low_rank.set_head(factorize_linear(model.head, rank))
    return low_rank
