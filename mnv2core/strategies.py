"""Training strategies of the study's first phase, each a plain function.

Each takes a model already on the data's device, trains it in place and returns the
per-epoch history (test accuracy after every epoch: convergence is part of the result).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .datasets import DatasetSplits
from .frozen_features import FeatureStore
from .models import ImageClassifier
from .profiles import TrainConfig
from .training import EpochStats, fit, with_training_subset


def partial_finetune(model: ImageClassifier, data: DatasetSplits, cfg: TrainConfig, *,
                     params: list[nn.Parameter] | None = None, features: FeatureStore | None = None,
                     **fit_args) -> list[EpochStats]:
    """Freeze the backbone (weights and batch-norm statistics); train ``params`` of the
    classifier (default: the head's). Without augmentation and with a ``features`` store,
    the backbone runs once over the data and the classifier trains on its cached output
    (same batches, same seed, same head: only faster)."""
    params = list(model.head.parameters()) if params is None else params
    for param in model.parameters():
        param.requires_grad_(False)
    for param in params:
        param.requires_grad_(True)
    if features is not None and not cfg.augment:
        frozen = features.splits(model, with_training_subset(data, cfg, fit_args["seed"]))
        return fit(model.classifier, frozen, cfg, params=params, **fit_args)
    return fit(model, data, cfg, params=params, frozen_modules=model.feature_modules(), **fit_args)


def train_all(model: ImageClassifier, data: DatasetSplits, cfg: TrainConfig, **fit_args) -> list[EpochStats]:
    """Unfreeze everything and train every parameter: full fine-tuning when the model comes
    from a partial fine-tune (the recipe uses a small lr), training from scratch otherwise."""
    for param in model.parameters():
        param.requires_grad_(True)
    return fit(model, data, cfg, params=list(model.parameters()), **fit_args)


full_finetune = train_all
train_from_scratch = train_all


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    """Hinton distillation: ``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE``.

    ``p^T`` is the softmax of logits / T; the KL is averaged over the batch. The T^2 factor
    keeps the soft term's gradients on the scale of the hard term's as T changes.
    """
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft * temperature ** 2 + (1 - alpha) * hard


def distill(student: ImageClassifier, teacher: nn.Module, data: DatasetSplits, cfg: TrainConfig,
            **fit_args) -> list[EpochStats]:
    """Train every parameter of ``student`` against labels and ``teacher``'s softened outputs
    (the teacher sees the same augmented batch, in eval mode, without gradients)."""
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    execution = fit_args.get("execution")
    if execution is not None:
        execution.prepare(teacher)

    def loss_fn(model, images, labels):
        with torch.no_grad():
            teacher_logits = teacher(images)
        return kd_loss(model(images).float(), teacher_logits.float(), labels, cfg.temperature, cfg.alpha)

    for param in student.parameters():
        param.requires_grad_(True)
    return fit(student, data, cfg, params=list(student.parameters()), loss_fn=loss_fn, **fit_args)
