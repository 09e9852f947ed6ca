"""The training loop and evaluation shared by every strategy."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from . import fit as fit_rules
from .datasets import DatasetSplits, FeatureSet, ImageSet, eval_batches, train_batches
from .errors import TrainingDivergedError
from .execution import Execution
from .profiles import TrainConfig

log = logging.getLogger("mnv2bench.train")

# an epoch's mean training loss above this multiple of the first epoch's stops training
DIVERGENCE_FACTOR = 2.0  # an epoch's loss above this x epoch 1's: diverging
FIRST_EPOCH_FACTOR = 10.0  # epoch 1's mean loss above this x its first step's (untrained model's): diverged
# the least loss the factors above multiply: a fine-tuning that starts from a model already good
# (a first loss of 0.07) may average 0.7 over its first epoch without diverging
LOSS_FLOOR = 0.5
WARMUP_START = 0.01  # a warm-up's first lr, as a fraction of the recipe's
VALIDATION_SEED = 0  # the validation split's draw: the same for every technique on a dataset
FIT_SAMPLE_IMAGES = 256  # training images scored after each epoch of a training long enough to diagnose
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    test_accuracy: float
    seconds: float
    images_per_second: float
    val_accuracy: float | None = None  # with a validation split
    kept: bool = False  # the epoch whose weights the model ends with (chosen on the validation split)
    train_accuracy: float | None = None  # on FIT_SAMPLE_IMAGES of the training split, in eval mode (3+ epochs)

    def as_dict(self) -> dict:
        stats = asdict(self)
        return {k: v for k, v in stats.items()
                if (k, v) not in (("val_accuracy", None), ("kept", False), ("train_accuracy", None))}


HISTORY_TOLERANCE = 0.005  # a model's test accuracy against its own history's: another CPU's kernels may flip an image


def history_disagreement(accuracy: float, epochs: list[dict]) -> str | None:
    """Why a model's test ``accuracy`` cannot be the one its training history ended with
    (its last training, where a build trained several times: pruning's rounds), or None.
    Undecided (None) where the history does not say: no epochs, or a validation split that
    kept the starting weights."""
    starts = [i for i, epoch in enumerate(epochs) if epoch.get("epoch") == 1]
    last = epochs[starts[-1]:] if starts else epochs
    if not last or ("val_accuracy" in last[-1] and not any(e.get("kept") for e in last)):
        return None
    ended = ended_accuracy(last, float("nan"))
    if abs(accuracy - ended) <= HISTORY_TOLERANCE:
        return None
    return f"its test accuracy is {accuracy:.4f} but its own training history ended at {ended:.4f}"


def ended_accuracy(epochs: list[dict], start: float) -> float:
    """Test accuracy of the weights a training ends with, read from its epochs' records: the
    epoch validation kept, ``start`` (the accuracy before training) when it kept none, the last
    epoch's when there was no validation split."""
    if not epochs:
        return start
    if "val_accuracy" not in epochs[-1]:
        return epochs[-1]["test_accuracy"]
    return next((e["test_accuracy"] for e in epochs if e.get("kept")), start)


def cross_entropy_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(images), labels)


@torch.inference_mode()
def evaluate(model: nn.Module, data: ImageSet | FeatureSet, batch_size: int,
             execution: Execution = Execution()) -> float:
    """Top-1 accuracy on ``data`` (model is left in eval mode)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=data.labels.device)
    batch_size = execution.inference_batch(batch_size, getattr(data, "size", None))
    for images, labels in eval_batches(data, batch_size):
        with execution.autocast():
            correct += (model(images).argmax(1) == labels).sum()
    return correct.item() / len(data)


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, data: ImageSet | FeatureSet, images: int, batch_size: int,
                           frozen_modules: Iterable[nn.Module] = (), execution: Execution = Execution()) -> None:
    """Re-estimate running mean/var of every trainable batch-norm layer as a plain average over
    the first ``images`` training images (no augmentation); frozen layers keep theirs."""
    frozen = {id(m) for f in frozen_modules for m in f.modules()}
    layers = [m for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in frozen]
    saved_momentum = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average
    model.train()
    for module in frozen_modules:
        module.eval()
    for batch, _ in eval_batches(data.head(images), batch_size):
        with execution.autocast():
            model(batch)
    for layer, momentum in zip(layers, saved_momentum, strict=True):
        layer.momentum = momentum


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int, steps_per_epoch: int):
    """A per-step lr schedule (None for a constant lr): ``cfg.warmup_epochs`` of linear warm-up
    from a hundredth of the lr, then the recipe's schedule over the remaining steps."""
    warmup = min(cfg.warmup_epochs * steps_per_epoch, total_steps)
    main = _schedule(optimizer, cfg, total_steps - warmup, steps_per_epoch)
    if not warmup:
        return main
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=WARMUP_START, total_iters=warmup)
    return ramp if main is None else torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], [warmup])


def _schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int, steps_per_epoch: int):
    total_steps = max(1, total_steps)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, cfg.step_epochs * steps_per_epoch, cfg.gamma)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


def train_one_epoch(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    optimizer: torch.optim.Optimizer, schedule, loss_fn: LossFn,
                    execution: Execution) -> tuple[torch.Tensor, int, torch.Tensor]:
    """The harness's training step over ``batches``: (summed loss, images seen, the first
    step's loss, before any update), the losses as tensors on the device (no host sync per step)."""
    loss_sum = torch.zeros((), device=execution.device)
    first = None
    seen = 0
    for images, labels in batches:
        with execution.autocast():
            loss = loss_fn(model, images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        loss_sum += loss.detach().float() * labels.shape[0]
        first = loss.detach().float() if first is None else first
        seen += labels.shape[0]
    return loss_sum, seen, loss_sum if first is None else first


def with_training_subset(data: DatasetSplits, cfg: TrainConfig, seed: int) -> DatasetSplits:
    """``data`` as the recipe trains on it: its ``validation_fraction`` of every class held out
    of the training split as ``validation`` (one draw per dataset, whatever the technique, so
    a fine-tuning never validates on images the model it starts from trained on), then
    ``train_images`` of the rest (a draw fixed by ``seed``); images or their cached features
    alike. Applied twice, the second changes nothing."""
    if cfg.validation_fraction and data.validation is None:
        rest, validation = data.train.stratified_split(cfg.validation_fraction, VALIDATION_SEED)
        data = replace(data, train=rest, validation=validation)
    if not cfg.train_images or cfg.train_images >= len(data.train):
        return data
    return replace(data, train=data.train.subset(cfg.train_images, seed))


def fit(model: nn.Module, data: DatasetSplits, cfg: TrainConfig, *, params: list[nn.Parameter],
        seed: int, label: str, eval_batch_size: int, execution: Execution = Execution(),
        loss_fn: LossFn = cross_entropy_loss, frozen_modules: Iterable[nn.Module] = ()) -> list[EpochStats]:
    """Train ``params`` of ``model`` for ``cfg.epochs`` on ``data.train`` (images already on
    the target device and size, or precomputed features), evaluating on ``data.test`` after
    every epoch. The model is put in the execution's memory format first.

    ``cfg.train_images`` > 0 trains on that many of the training images (drawn by ``seed``).
    Everything random is seeded from ``seed``: the batches' order and augmentation, and
    torch's global generator (dropout), so a training does not depend on what ran before it.
    ``frozen_modules`` stay in eval mode (batch-norm statistics do not move). The loss is
    checked once per epoch: NaN, inf, an epoch-1 mean above FIRST_EPOCH_FACTOR x the first
    step's loss (the model before any update: e.g. Adam at a huge lr, whose loss then falls
    from the hundreds) or a later one above DIVERGENCE_FACTOR x epoch 1's raises
    TrainingDivergedError (and nothing gets cached).
    """
    data = with_training_subset(data, cfg, seed)
    validation = data.validation if cfg.validation_fraction else None
    execution.prepare(model)
    torch.manual_seed(seed)  # dropout and anything else drawing from torch's global generator
    generator = torch.Generator(device=data.train.labels.device).manual_seed(seed)
    optimizer = make_optimizer(params, cfg)
    steps_per_epoch = max(1, len(data.train) // cfg.batch_size)
    schedule = make_schedule(optimizer, cfg, cfg.epochs * steps_per_epoch, steps_per_epoch)
    frozen_modules = list(frozen_modules)
    if cfg.bn_frozen:
        frozen_modules += [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    best = Best(model, evaluate(model, validation, eval_batch_size, execution)) if validation is not None else None
    # the same training images every epoch, for the fit diagnosis (none for a training too short to have a trend)
    fit_sample = data.train.subset(FIT_SAMPLE_IMAGES, VALIDATION_SEED) if cfg.epochs >= fit_rules.MIN_EPOCHS else None
    history = []
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        model.train()
        for module in frozen_modules:
            module.eval()
        batches = train_batches(data.train, cfg.batch_size, cfg.augment, generator)
        loss_sum, seen, first_step = train_one_epoch(model, batches, optimizer, schedule, loss_fn, execution)
        train_loss = loss_sum.item() / max(seen, 1)
        if epoch == 1:
            start_loss = first_step.item()  # the untrained model's loss
        if not math.isfinite(train_loss):
            raise TrainingDivergedError(
                f"{label}: the training loss became {train_loss} in epoch {epoch}. Lower the learning "
                f"rate (now {cfg.lr}) or change the optimizer in the profile, then rerun (nothing of it was cached)."
            )
        if epoch == 1 and train_loss > FIRST_EPOCH_FACTOR * max(start_loss, LOSS_FLOOR):
            raise TrainingDivergedError(
                f"{label}: the training loss averaged {train_loss:.4g} over epoch 1, {train_loss / start_loss:.0f}x "
                f"its first step's {start_loss:.4g} (before any update): training diverges. Lower the learning "
                f"rate (now {cfg.lr}) in the profile, then rerun.")
        first_loss = history[0].train_loss if history else train_loss
        if train_loss > DIVERGENCE_FACTOR * max(first_loss, LOSS_FLOOR):
            raise TrainingDivergedError(
                f"{label}: the training loss rose from {first_loss:.4g} (epoch 1) to {train_loss:.4g} in epoch "
                f"{epoch}: training diverges. Lower the learning rate (now {cfg.lr}) in the profile, then rerun."
            )
        if epoch == cfg.epochs and cfg.bn_recalibration_images:
            recalibrate_batch_norm(model, data.train, cfg.bn_recalibration_images, eval_batch_size,
                                   frozen_modules, execution)
        train_seconds = time.perf_counter() - started
        accuracy = evaluate(model, data.test, eval_batch_size, execution)
        val_accuracy = None if best is None else best.offer(epoch, evaluate(model, validation, eval_batch_size,
                                                                            execution))
        stats = EpochStats(epoch, train_loss, accuracy, time.perf_counter() - started, seen / train_seconds,
                           val_accuracy, train_accuracy=None if fit_sample is None else
                           evaluate(model, fit_sample, eval_batch_size, execution))
        history.append(stats)
        log.info("%s epoch %d/%d: loss %.4f, test accuracy %.4f%s, %.1fs (%.0f img/s)", label, epoch,
                 cfg.epochs, train_loss, accuracy, "" if best is None else f", validation {val_accuracy:.4f}",
                 stats.seconds, stats.images_per_second)
    if best is None:
        return history
    best.restore()
    log.info("%s: kept %s (validation accuracy %.4f)", label,
             f"epoch {best.epoch}" if best.epoch else "the starting weights (no epoch beat them)", best.accuracy)
    return [replace(h, kept=h.epoch == best.epoch) for h in history]


class Best:
    """The weights of the best of a training's start (epoch 0) and its epochs on the validation
    split (the earliest on ties), kept on the CPU."""

    def __init__(self, model: nn.Module, start_accuracy: float):
        self.model, self.epoch, self.accuracy = model, 0, start_accuracy
        self.state = self._copy()

    def offer(self, epoch: int, accuracy: float) -> float:
        if accuracy > self.accuracy:
            self.epoch, self.accuracy, self.state = epoch, accuracy, self._copy()
        return accuracy

    def restore(self) -> None:
        self.model.load_state_dict(self.state)

    def _copy(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
