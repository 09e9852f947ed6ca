"""Training strategies of the study's first phase, each a plain function.

Each takes a model already on the data's device, trains it in place and returns the
per-epoch history (test accuracy after every epoch: convergence is part of the result).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .datasets import DatasetSplits
from .models import ImageClassifier
from .profiles import TrainConfig
from .training import EpochStats, autocast, fit


def partial_finetune(model: ImageClassifier, data: DatasetSplits, cfg: TrainConfig, **fit_args) -> list[EpochStats]:
    """Freeze the feature extractor (weights and batch-norm statistics); train the head."""
    for param in model.feature_parameters():
        param.requires_grad_(False)
    head = list(model.head.parameters())
    for param in head:
        param.requires_grad_(True)
    return fit(model, data, cfg, params=head, frozen_modules=model.feature_modules(), **fit_args)


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
    amp = fit_args.get("amp", False)

    def loss_fn(model, images, labels):
        with torch.no_grad(), autocast(images.device, amp):
            teacher_logits = teacher(images)
        return kd_loss(model(images).float(), teacher_logits.float(), labels, cfg.temperature, cfg.alpha)

    for param in student.parameters():
        param.requires_grad_(True)
    return fit(student, data, cfg, params=list(student.parameters()), loss_fn=loss_fn, **fit_args)
