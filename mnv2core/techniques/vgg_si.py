"""VGG16 on 32 px images and its separation-index (SI) compression, as cached artifacts:

- ``vgg_train``: a small learning-rate (and, on a step schedule, lr-step) search scored on a
  stratified validation split of the training set, then training from random init with the best
  candidate;
- ``vgg_head``: the trained features frozen, the classifier re-initialised and retrained;
- ``vgg_si``: SI of every conv layer's output; trailing layers that do not raise it dropped;
  the last kept layer's filters chosen greedily by SI gain; a classifier for the new width
  trained on the frozen rest.

Training curves are scored on the validation split; the test set only gives the final score
(the case's accuracy)."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import strategies
from ..building import fit_args
from ..companion.plots import plot_feature_si, plot_layer_si, plot_training_curves
from ..companion.separation import center_separation_index, greedy_feature_selection, layers_to_keep, separation_index
from ..context import Case, Context, Recipe, model_payload
from ..datasets import DatasetSplits, ImageSet, eval_batches
from ..errors import ConfigError
from ..keys import ArtifactKey
from ..metrics import accuracy, figure, info
from ..models import ImageClassifier, build_model, count_parameters
from ..networks import compress_vgg, conv_outputs
from ..profiles import TrainConfig
from ..registry import TRAINED, Table, Technique, only, register, register_study, register_table, require
from ..training import evaluate
from ..weights import random_init_provenance

MODEL = "vgg16"
STUDY = "vgg_si"
SEARCH_KEYS = ("validation_fraction", "lr_candidates", "step_candidates", "search_epochs")
SI_KEYS = ("si_fraction", "si_pool", "layer_gain", "feature_gain", "max_features")
# learning-rate search on a stratified validation split, then separation-index compression
register_study(STUDY, {"validation_fraction": 0.1, "lr_candidates": [0.01, 0.05, 0.1], "step_candidates": [],
                       "search_epochs": 10, "si_fraction": 0.1, "si_pool": 2, "layer_gain": 0.01,
                       "feature_gain": 0.002, "max_features": 128})


class VggSi:
    """The three steps on one context (their shared helpers need the study's parameters)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.params = ctx.profile.studies[STUDY]

    # the three steps ----------------------------------------------------------
    def train(self, job: VggJob) -> dict[str, Any]:
        dataset = job.dataset
        splits = self._splits(dataset, job.size)
        candidates = [(lr, step) for lr in self.params["lr_candidates"] for step in lr_steps_to_search(self.params, job.cfg)]
        if not candidates:
            raise ConfigError(f"[studies.{STUDY}] lr_candidates is empty: give at least one learning rate")
        # one candidate leaves nothing to choose: it trains without a search trial
        trials = [self._trial(job, splits, lr, step) for lr, step in candidates] if len(candidates) > 1 else []
        (lr, step), *_ = candidates
        best = max(trials, key=lambda t: t["val_accuracy"], default={"lr": lr, "step_epochs": step})  # first on ties
        cfg = dataclasses.replace(job.cfg, lr=best["lr"], step_epochs=best["step_epochs"])
        torch.manual_seed(job.seed)  # the final model starts as every trial did
        model = build_model(MODEL, splits.num_classes).to(self.ctx.device)
        history = self._fit(model, splits, cfg, job)
        curves = {f"lr {t['lr']:g}, {t['schedule']}": t["history"] for t in trials}
        curves["final"] = history
        metrics = {"lr_search": trials, "chosen_lr": cfg.lr, "chosen_step_epochs": cfg.step_epochs,
                   **self._split_sizes(splits), "val_accuracy": history[-1]["val_accuracy"],
                   "curves_plot": self._plot_curves(job, curves)}
        return job.payload(model, history, metrics, train=cfg)

    def head(self, job: VggJob) -> dict[str, Any]:
        dataset = job.dataset
        trained = self.ctx.artifact(dataset, "vgg_train")
        splits = self._splits(dataset, job.size)
        model = copy.deepcopy(trained.model)
        torch.manual_seed(job.seed)
        for layer in model.net.classifier:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        history = self._fit(model, splits, job.cfg, job, head_params=list(model.net.classifier.parameters()))
        metrics = {"trained_accuracy": self._test_accuracy(trained.model, dataset, job.size),
                   **self._split_sizes(splits), "val_accuracy": history[-1]["val_accuracy"],
                   "curves_plot": self._plot_curves(job, {"classifier retrain": history})}
        return job.payload(model, history, metrics)

    def compress(self, job: VggJob) -> dict[str, Any]:
        dataset = job.dataset
        base = self.ctx.artifact(dataset, "vgg_head")
        splits = self._splits(dataset, job.size)
        analysis = self._analyse(base.model, splits.train, self.ctx.data_at(dataset, job.size).test)
        width = len(analysis["selected"])
        torch.manual_seed(job.seed)
        net = compress_vgg(base.model.net, analysis["layers_kept"], analysis["selected"], 2 * width,
                           splits.num_classes)
        model = ImageClassifier(MODEL, net).to(self.ctx.device)
        history = self._fit(model, splits, job.cfg, job, head_params=list(net.classifier.parameters()))
        metrics = {**self._si_metrics(analysis, job),
                   "dense_accuracy": self._test_accuracy(base.model, dataset, job.size),
                   "params_before": count_parameters(base.model), "params_after": count_parameters(model),
                   "val_accuracy": history[-1]["val_accuracy"],
                   "curves_plot": self._plot_curves(job, {"classifier of the compressed model": history})}
        arch = {"vgg_cut": {"conv_layers": analysis["layers_kept"], "channels": width, "hidden": 2 * width}}
        return job.payload(model, history, metrics, arch=arch)

    # separation index ---------------------------------------------------------
    def _analyse(self, model: ImageClassifier, train: ImageSet, test: ImageSet) -> dict[str, Any]:
        """SI per conv layer on a stratified share of the training and test images, the number of
        layers worth keeping, and the greedy choice of the last kept layer's filters."""
        fraction, seed = self.params["si_fraction"], self.ctx.profile.seed
        train_part, test_part = train.stratified_split(fraction, seed)[1], test.stratified_split(fraction, seed)[1]
        train_maps, train_channels = self._layer_features(model, train_part)
        test_maps, _ = self._layer_features(model, test_part)
        train_labels, test_labels = train_part.labels, test_part.labels
        si_train = [separation_index(f, train_labels) for f in train_maps]
        si_test = [separation_index(f, test_labels) for f in test_maps]
        kept = layers_to_keep(si_train, self.params["layer_gain"])
        channels = _standardise(train_channels[kept - 1])
        selection = greedy_feature_selection(channels, train_labels, self.params["max_features"],
                                             self.params["feature_gain"], candidate_chunk=8)
        return {"si_train": si_train, "si_test": si_test, "layers_kept": kept, "si_images": len(train_part),
                "center_si_train": [center_separation_index(f, train_labels) for f in train_maps],
                "selection": [{"channel": c, "si": si} for c, si in selection],
                "selected": [c for c, _ in selection], "channels_available": channels.shape[1]}

    @torch.no_grad()
    def _layer_features(self, model: ImageClassifier, images: ImageSet) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per conv layer: its output average-pooled to si_pool x si_pool and flattened, and its
        per-channel means (n, channels); on the study's device (the SI searches run there)."""
        model.eval()
        outputs = set(conv_outputs(model.net.features))
        pooled, means = [], []
        for batch, _ in eval_batches(images, self.ctx.profile.eval_batch_size):
            x, maps, channel_means = model.normalize(batch), [], []
            for index, layer in enumerate(model.net.features):
                x = layer(x)
                if index in outputs:
                    maps.append(F.adaptive_avg_pool2d(x, self.params["si_pool"]).flatten(1).float())
                    channel_means.append(x.mean((2, 3)).float())
            pooled.append(maps)
            means.append(channel_means)
        return [torch.cat(layer) for layer in zip(*pooled, strict=True)], [torch.cat(layer) for layer in zip(*means, strict=True)]

    def _si_metrics(self, analysis: dict[str, Any], job: VggJob) -> dict[str, Any]:
        layers = len(analysis["si_train"])
        title = f"{job.label}: separation index"
        return {
            **{k: analysis[k] for k in ("si_train", "si_test", "center_si_train", "layers_kept", "selection",
                                         "channels_available", "si_images")},
            "conv_layers": layers, "features_selected": len(analysis["selected"]),
            "layer_gain": self.params["layer_gain"], "feature_gain": self.params["feature_gain"],
            "si_selected": analysis["selection"][-1]["si"],
            "si_layers_plot": str(plot_layer_si(analysis["si_train"], analysis["si_test"], analysis["layers_kept"],
                                                self._plot_dir() / f"{job.label}-layers.png", title)),
            "si_features_plot": str(plot_feature_si(analysis["selection"], self._plot_dir() / f"{job.label}-features.png",
                                                    f"{title} of the selected filters (layer {analysis['layers_kept']})")),
        }

    # helpers ------------------------------------------------------------------
    def _splits(self, dataset: str, size: int) -> DatasetSplits:
        """Training data less a stratified validation share, which takes the test set's place."""
        data = self.ctx.data_at(dataset, size)
        rest, validation = data.train.stratified_split(self.params["validation_fraction"], self.ctx.profile.seed)
        return dataclasses.replace(data, train=rest, test=validation)

    @staticmethod
    def _split_sizes(splits: DatasetSplits) -> dict[str, int]:
        return {"train_images": len(splits.train), "validation_images": len(splits.test)}

    def _trial(self, job: VggJob, splits: DatasetSplits, lr: float, step: int) -> dict[str, Any]:
        cfg = dataclasses.replace(job.cfg, lr=lr, step_epochs=step, epochs=self.params["search_epochs"])
        torch.manual_seed(job.seed)
        model = build_model(MODEL, splits.num_classes).to(self.ctx.device)
        history = self._fit(model, splits, cfg, job, step=f"search lr {lr:g}, {schedule_label(cfg)}")
        return {"lr": lr, "step_epochs": step, "schedule": schedule_label(cfg), "epochs": cfg.epochs,
                "val_accuracy": history[-1]["val_accuracy"], "history": history}

    def _fit(self, model: ImageClassifier, splits: DatasetSplits, cfg: TrainConfig, job: VggJob,
             head_params: list | None = None, step: str = "") -> list[dict]:
        """Train the whole model, or only ``head_params`` (the classifier's) on the frozen
        backbone (on cached features when the recipe does not augment)."""
        args = fit_args(self.ctx, job.seed, f"{job.label} {step}".strip())
        if head_params is not None:
            history = strategies.partial_finetune(model, splits, cfg, params=head_params,
                                                  features=self.ctx.features, **args)
        else:
            history = strategies.train_all(model, splits, cfg, **args)
        return [_on_validation(h.as_dict()) for h in history]

    def _test_accuracy(self, model: nn.Module, dataset: str, size: int) -> float:
        return evaluate(model, self.ctx.data_at(dataset, size).test, self.ctx.profile.eval_batch_size, self.ctx.execution)

    def _plot_dir(self):
        return self.ctx.cache_root / "vgg_si"  # kept with the artifacts they describe

    def _plot_curves(self, job: VggJob, curves: dict[str, list[dict]]) -> str:
        return str(plot_training_curves(curves, self._plot_dir() / f"{job.label}-curves.png", job.label))


@dataclasses.dataclass(frozen=True)
class VggStep:
    """The builder of one step (``VggSi``'s method ``step``): its key holds its recipe and
    the study parameters it reads (``keys``)."""

    step: str
    keys: tuple[str, ...]

    def key(self, ctx: Context, case: Case) -> Recipe:
        params = ctx.profile.studies[STUDY]
        return Recipe({"input_size": ctx.input_size(case.dataset, case.technique),
                       "train": dataclasses.asdict(ctx.profile.train_config(case.technique, case.dataset)),
                       "params": {k: params[k] for k in self.keys}})

    def build(self, ctx: Context, case: Case, key: ArtifactKey) -> dict[str, Any]:
        job = VggJob(ctx, case.dataset, case.technique, ctx.profile.train_config(case.technique, case.dataset),
                     key.recipe["input_size"], key.seed)
        return getattr(VggSi(ctx), self.step)(job)


@dataclasses.dataclass
class VggJob:
    """One VGG build: its recipe and seed."""

    ctx: Context
    dataset: str
    technique: str
    cfg: TrainConfig
    size: int
    seed: int

    @property
    def label(self) -> str:
        return f"{self.dataset}-{MODEL}-{self.technique}"

    def payload(self, model: nn.Module, history: list[dict], metrics: dict[str, Any],
                train: TrainConfig | None = None, arch: dict | None = None) -> dict[str, Any]:
        meta = {"history": history, "weights": random_init_provenance(MODEL), "input_size": self.size,
                "metrics": metrics, "train": dataclasses.asdict(train or self.cfg), "record": {"study": STUDY}}
        return model_payload(model, meta, arch=arch)


def lr_steps_to_search(params: dict[str, Any], cfg: TrainConfig) -> list[int]:
    """The lr-step sizes the search tries: the study's candidates on a step schedule, else the
    recipe's own (which no other schedule reads)."""
    if params["step_candidates"] and cfg.schedule != "step":
        raise ConfigError(f"[studies.{STUDY}] step_candidates = {params['step_candidates']} needs [techniques.vgg_train] "
                          f"schedule = \"step\" (it is {cfg.schedule!r}); drop step_candidates or use the step schedule")
    return list(params["step_candidates"]) or [cfg.step_epochs]


def schedule_label(cfg: TrainConfig) -> str:
    """The lr schedule in words: the step size only where the lr steps."""
    if cfg.schedule == "step":
        return f"lr x{cfg.gamma:g} every {cfg.step_epochs} epoch{'s' if cfg.step_epochs > 1 else ''}"
    return {"onecycle": "one cycle", "cosine": "cosine", "constant": "constant lr"}[cfg.schedule]


def _on_validation(epoch: dict) -> dict:
    """Rename the epoch's accuracy: here it is measured on the validation split."""
    epoch = dict(epoch)
    epoch["val_accuracy"] = epoch.pop("test_accuracy")
    return epoch


def _standardise(features: torch.Tensor) -> torch.Tensor:
    """Columns to zero mean and unit variance, so no filter wins distances by its scale."""
    return (features - features.mean(0)) / features.std(0).clamp_min(1e-8)


# checks --------------------------------------------------------------------------------------
def is_png(path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"\x89PNG"


def check_train(m: dict, case: Case) -> None:
    if m["lr_search"]:  # none where the profile gives one candidate
        best = max(t["val_accuracy"] for t in m["lr_search"])
        require(any(t["lr"] == m["chosen_lr"] and t["val_accuracy"] == best for t in m["lr_search"]),
                f"lr {m['chosen_lr']} was chosen, not the best on validation ({best})")
    require(m["validation_images"] > 0 and is_png(m["curves_plot"]), "no validation split or curves plot")
    require(all("val_accuracy" in epoch for epoch in m["epochs"]), "training curves must be scored on validation")


def check_head(m: dict, case: Case) -> None:
    require(is_png(m["curves_plot"]), f"{m['curves_plot']} is not a PNG")
    require(all("val_accuracy" in epoch for epoch in m["epochs"]), "training curves must be scored on validation")


def check_si(m: dict, case: Case) -> None:
    layers = m["conv_layers"]
    require(len(m["si_train"]) == len(m["si_test"]) == layers == 13, "SI must cover VGG16's 13 conv layers")
    require(all(0 <= v <= 1 for v in m["si_train"] + m["si_test"]), "SI outside [0, 1]")
    require(1 <= m["layers_kept"] <= layers, f"{m['layers_kept']} layers kept")
    kept_best = max(m["si_train"][:m["layers_kept"]])
    require(max(m["si_train"][m["layers_kept"]:], default=0) <= kept_best + m["layer_gain"] + 1e-9,
            "a dropped layer raised the SI by more than layer_gain")
    selection = [s["si"] for s in m["selection"]]
    require(1 <= m["features_selected"] == len(selection) <= m["channels_available"], "bad feature selection")
    require(selection == sorted(selection), "greedy selection must not lower the separation index")
    require(m["params_after"] < m["params_before"], "the SI-compressed model is not smaller")
    require(is_png(m["si_layers_plot"]) and is_png(m["si_features_plot"]), "SI plots missing")


STEPS = (("vgg_train", "trained end to end"), ("vgg_head", "classifier retrained, features frozen"),
         ("vgg_si", "compressed by separation index"))


def lr_search_rows(found) -> list[dict]:
    m = only(found, "vgg_train")
    return [{"lr": f"{t['lr']:g}", "schedule": t.get("schedule", "not recorded"), "search epochs": t["epochs"],
             "val acc": f"{t['val_accuracy']:.3f}",
             "chosen": "*" if (t["lr"], t["step_epochs"]) == (m["chosen_lr"], m["chosen_step_epochs"]) else ""}
            for t in m.get("lr_search", [])]


def vgg_rows(found) -> list[dict]:
    rows = []
    for technique, step in STEPS:
        m = only(found, technique)
        if "accuracy" not in m:
            continue
        rows.append({"VGG16": step, "test acc": f"{m['accuracy']:.3f}", "val acc": f"{m.get('val_accuracy', 0):.3f}",
                     "params (M)": f"{m['parameters'] / 1e6:.3f}",
                     "conv layers": f"{m['layers_kept']} of {m['conv_layers']}" if "layers_kept" in m else "13",
                     "last-layer features": (f"{m['features_selected']} of {m['channels_available']}"
                                             if "features_selected" in m else "512"),
                     "curves": m.get("curves_plot", "")})
    return rows


def si_layer_rows(found) -> list[dict]:
    m = only(found, "vgg_si")
    if "si_train" not in m:
        return []
    return [{"conv layer": i + 1, "SI train": f"{train:.3f}", "SI test": f"{test:.3f}",
             "center SI train": f"{centre:.3f}", "kept": "yes" if i < m["layers_kept"] else ""}
            for i, (train, test, centre) in enumerate(zip(m["si_train"], m["si_test"], m["center_si_train"], strict=True))]


def si_feature_rows(found) -> list[dict]:
    return [{"features": k + 1, "added filter": s["channel"], "SI": f"{s['si']:.3f}"}
            for k, s in enumerate(only(found, "vgg_si").get("selection", []))]


TRAINING = (accuracy("val_accuracy", "accuracy on the validation split carved from the training data"),
            info("train_images", "count"), info("validation_images", "count"),
            figure("curves_plot", "training curves"))
TRAIN_METRICS = (*TRAINING, info("chosen_lr", "lr"), info("chosen_step_epochs", "epochs"),
                 info("lr_search", "list", "each candidate's validation accuracy"))
HEAD_METRICS = (*TRAINING, accuracy("trained_accuracy", "vgg_train's test accuracy", gated=False))
SI_METRICS = (
    accuracy("val_accuracy", "accuracy on the validation split"), figure("curves_plot", "training curves"),
    accuracy("dense_accuracy", "vgg_head's test accuracy", gated=False),
    info("si_train", "list", "SI of every conv layer's output, training sample"), info("si_test", "list"),
    info("center_si_train", "list"), info("layers_kept", "count"), info("conv_layers", "count"),
    info("selection", "list", "greedily selected filters and the SI they reach"),
    info("features_selected", "count"), info("channels_available", "count"), info("si_images", "count"),
    info("si_selected", "fraction"), info("layer_gain", "fraction"), info("feature_gain", "fraction"),
    info("params_before", "count"), info("params_after", "count"),
    figure("si_layers_plot"), figure("si_features_plot"),
)
register(Technique("vgg_train", TRAINED, "VGG16 trained end to end", study=STUDY, model=MODEL,
                   builder=VggStep("train", SEARCH_KEYS), check=check_train, starts_early=True,
                   metrics=TRAIN_METRICS))
register(Technique("vgg_head", TRAINED, "VGG16, classifier retrained on frozen features", study=STUDY, model=MODEL,
                   builder=VggStep("head", ("validation_fraction",)), check=check_head, needs=("vgg_train",),
                   metrics=HEAD_METRICS))
register(Technique("vgg_si", TRAINED, "VGG16 compressed by separation index", study=STUDY, model=MODEL,
                   builder=VggStep("compress", ("validation_fraction", *SI_KEYS)), check=check_si,
                   needs=("vgg_head",), metrics=SI_METRICS))
VGG = tuple(name for name, _ in STEPS)
register_table(Table("VGG16: learning-rate search (scored on the validation split)", VGG, lr_search_rows))
register_table(Table("VGG16 and its separation-index (SI) compression", VGG, vgg_rows))
register_table(Table("Separation index of every conv layer's output", VGG, si_layer_rows))
register_table(Table("SI of the greedily selected filters of the last kept layer", VGG, si_feature_rows))
