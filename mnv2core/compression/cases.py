"""Compression as cached artifacts of the study: each technique takes a trained model (its
"base": full fine-tuned or distilled), compresses it, retrains it with the base's own
strategy (distillation stays distillation) and returns a payload for the cache."""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from typing import TYPE_CHECKING, Any, Callable

import torch

from .. import strategies
from ..errors import ConfigError
from ..models import build_model, count_parameters
from ..profiles import Compression, compressed_technique
from ..seeding import derive_seed
from ..training import evaluate
from .channels import count_macs, prune_last_conv_channels, state_dict_bytes
from .lowrank import energy_rank, factorize_linear, layer_spectra, ratio_rank
from .plots import plot_cumulative_energy
from .unstructured import apply_masks, make_permanent, masks_of, measured_sparsity, prune_global_magnitude, rewind

if TYPE_CHECKING:
    from ..study import Artifact, Study


class CompressionCases:
    def __init__(self, study: "Study"):
        self.study = study
        self._techniques = {tech: (base, comp) for tech, base, comp in study.profile.compressed_cases()}
        self._builders: dict[str, Callable] = {"prune": self._prune, "structured": self._structured,
                                               "lottery": self._lottery, "svd": self._svd, "spectra": self._spectra}

    def handles(self, technique: str) -> bool:
        return technique in self._techniques

    def artifact(self, dataset: str, technique: str) -> "Artifact":
        base_name, compression = self._techniques[technique]
        base = self.study.artifact(dataset, base_name)
        cfg = self.study.profile.retrain_config(compression, base_name, dataset)
        seed = self.study.seed_for(dataset, technique)
        upstream = {base_name: base.key, **self._upstream(dataset, base_name, compression)}
        spec = {"kind": compression.name, "base": base.key, "params": compression.params,
                "retrain": dataclasses.asdict(cfg), "seed": seed, "execution": self.study.execution.spec(), "upstream": upstream}
        label = f"{dataset}-{base.model.name}-{technique}"

        def build() -> dict[str, Any]:
            started = time.perf_counter()
            job = Job(self.study, dataset, base_name, base, cfg, seed, label)
            model, arch, metrics, history = self._builders[compression.name](job, compression.params)
            meta = {**base.meta, "history": history, "train_seconds": time.perf_counter() - started,
                    "train": dataclasses.asdict(cfg), "upstream": upstream, "metrics": metrics,
                    "record": {"base": base_name, "derived": compression.name}}
            return {"model": model.name, "num_classes": base.model.head.out_features,
                    "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "arch": arch, "meta": meta}

        return self.study.cached(label, spec, build)

    def _upstream(self, dataset: str, base: str, compression: Compression) -> dict[str, str]:
        if compression.name != "lottery":
            return {}
        prune = compressed_technique(base, "prune")
        if not self.handles(prune):
            raise ConfigError("the lottery ticket takes its mask from iterative pruning: add [compression.prune]")
        return {prune: self.study.artifact(dataset, prune).key}

    # techniques: each returns (model, arch, metrics, per-epoch history) ------------------
    def _prune(self, job: "Job", params: dict) -> tuple:
        model = copy.deepcopy(job.base.model)
        rounds, history = [], []
        for round_ in range(1, params["rounds"] + 1):
            prune_global_magnitude(model, params["amount"])
            before = job.evaluate(model)
            epochs = job.retrain(model, f"round {round_}")
            history += epochs
            rounds.append({"round": round_, "sparsity": measured_sparsity(model),
                           "accuracy_before_retrain": before, "accuracy": epochs[-1]["test_accuracy"]})
        make_permanent(model)
        metrics = {"dense_accuracy": job.base_accuracy(), "sparsity": measured_sparsity(model),
                   "target_sparsity": 1 - (1 - params["amount"]) ** params["rounds"], "rounds": rounds}
        return model, None, metrics, history

    def _structured(self, job: "Job", params: dict) -> tuple:
        dense = job.base.model
        model = prune_last_conv_channels(dense, params["ratio"], params["criterion"])
        before = job.evaluate(model)
        history = job.retrain(model)
        size = job.input_size
        metrics = {"dense_accuracy": job.base_accuracy(), "accuracy_before_retrain": before,
                   "criterion": params["criterion"],
                   "channels_before": dense.head.in_features, "channels_after": model.head.in_features,
                   "params_before": count_parameters(dense), "params_after": count_parameters(model),
                   "bytes_before": state_dict_bytes(dense), "bytes_after": state_dict_bytes(model),
                   "macs_before": count_macs(dense, size), "macs_after": count_macs(model, size)}
        return model, {"last_channels": model.head.in_features}, metrics, history

    def _lottery(self, job: "Job", params: dict) -> tuple:
        if job.base.start_state is None:
            raise ConfigError(f"{job.label}: the base artifact has no saved start weights; rebuild it with --refresh")
        pruned = self.study.artifact(job.dataset, compressed_technique(job.base_name, "prune"))
        masks = masks_of(pruned.model)
        ticket = build_model(job.base.model.name, job.base.model.head.out_features).to(self.study.device)
        rewind(ticket, job.base.start_state, masks)
        ticket_history = job.retrain(ticket, "ticket")
        make_permanent(ticket)
        torch.manual_seed(job.seed + 1)
        control = build_model(job.base.model.name, job.base.model.head.out_features).to(self.study.device)
        apply_masks(control, masks)
        control_history = job.retrain(control, "random reinit control")
        make_permanent(control)
        dense, ticket_accuracy = job.base_accuracy(), ticket_history[-1]["test_accuracy"]
        metrics = {"dense_accuracy": dense, "pruned_accuracy": pruned.meta["metrics"]["rounds"][-1]["accuracy"],
                   "ticket_accuracy": ticket_accuracy, "control_accuracy": control_history[-1]["test_accuracy"],
                   "sparsity": measured_sparsity(ticket), "reaches_dense": ticket_accuracy >= dense,
                   "control_epochs": control_history}
        return ticket, None, metrics, ticket_history

    def _svd(self, job: "Job", params: dict) -> tuple:
        dense = job.base.model
        head = dense.head
        singular = torch.linalg.svdvals(head.weight.detach().double())
        ranks = {f"energy {params['energy']:.0%}": energy_rank(singular, params["energy"])}
        ranks.update({f"keep {keep:g}": ratio_rank(head, keep) for keep in params["keep_ratios"]})
        variants, models = [], []
        for name, rank in ranks.items():
            model = copy.deepcopy(dense)
            model.set_head(factorize_linear(head, rank))
            before = job.evaluate(model)
            epochs = job.retrain(model, f"rank {rank}")
            models.append(model)
            variants.append({"variant": name, "rank": rank, "head_params": count_parameters(model.head),
                             "params": count_parameters(model), "bytes": state_dict_bytes(model),
                             "accuracy_before_recovery": before, "accuracy": epochs[-1]["test_accuracy"],
                             "epochs": epochs})
        metrics = {"dense_accuracy": job.base_accuracy(), "head_shape": list(head.weight.shape),
                   "head_params_before": count_parameters(head), "params_before": count_parameters(dense),
                   "bytes_before": state_dict_bytes(dense), "variants": variants}
        # the case's model is the first variant: the rank holding the profile's energy
        return models[0], {"head_rank": variants[0]["rank"]}, metrics, variants[0]["epochs"]

    def _spectra(self, job: "Job", params: dict) -> tuple:
        spectra = layer_spectra(job.base.model, params["energy"])
        folder = self.study.cache.root / "spectra"  # kept with the artifact they describe
        folder.mkdir(parents=True, exist_ok=True)
        values_file = folder / f"{job.label}.json"
        values_file.write_text(json.dumps(spectra))
        plot = plot_cumulative_energy(spectra, folder / f"{job.label}.png", job.label, params["energy"])
        summary = [{k: layer[k] for k in ("layer", "shape", "rank", "k95", "k95_fraction")} for layer in spectra]
        fractions = [layer["k95_fraction"] for layer in spectra]
        metrics = {"layers": len(spectra), "mean_k95_fraction": sum(fractions) / len(fractions),
                   "head_k95": spectra[-1]["k95"], "spectra": summary, "plot": str(plot),
                   "singular_values_file": str(values_file)}
        return job.base.model, None, metrics, []


@dataclasses.dataclass
class Job:
    """One compression build: the base model and how to evaluate and retrain on its data."""

    study: "Study"
    dataset: str
    base_name: str
    base: "Artifact"
    cfg: Any
    seed: int
    label: str

    @property
    def input_size(self) -> int:
        return self.base.meta["input_size"]

    @property
    def data(self):
        return self.study.data_at(self.dataset, self.input_size)

    def evaluate(self, model) -> float:
        return evaluate(model, self.data.test, self.study.profile.eval_batch_size, self.study.execution)

    def base_accuracy(self) -> float:
        return self.evaluate(self.base.model)

    def retrain(self, model, step: str = "") -> list[dict]:
        """Train ``model`` in place with the base's strategy and the retraining recipe."""
        if self.base_name == "kd":
            teacher = self.study.artifact(self.dataset, "teacher").model
            strategy = lambda m, d, c, **kw: strategies.distill(m, teacher, d, c, **kw)  # noqa: E731
        else:
            strategy = strategies.train_all
        history = strategy(model, self.data, self.cfg, seed=derive_seed(self.seed, step),
                           label=f"{self.label} {step}".strip(),
                           eval_batch_size=self.study.profile.eval_batch_size, execution=self.study.execution)
        return [h.as_dict() for h in history]
