"""What a classifier's test predictions say beyond top-1 accuracy, for imbalanced classes:
the confusion matrix, per-class accuracy (recall), balanced accuracy, macro-F1, and ROC-AUC
where there are two classes (from the softmax score of class 1, ties counted half)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .datasets import FeatureSet, ImageSet, eval_batches
from .execution import Execution

IMBALANCE_RATIO = 2.0  # the largest test class over the smallest: above it the report warns


@torch.no_grad()
def class_scores(model: nn.Module, data: ImageSet | FeatureSet, batch_size: int, classes: int,
                 execution: Execution = Execution()) -> dict[str, Any]:
    """Top-1 accuracy and the scores above of ``model`` on ``data`` (left in eval mode)."""
    model.eval()
    predicted, scores = [], []
    batch_size = execution.inference_batch(batch_size, getattr(data, "size", None))
    for images, _ in eval_batches(data, batch_size):
        with execution.autocast():
            logits = model(images).float()
        predicted.append(logits.argmax(1).cpu())
        if classes == 2:
            scores.append(logits.softmax(1)[:, 1].cpu())
    return scores_of(data.labels.cpu(), torch.cat(predicted), classes, torch.cat(scores) if scores else None)


def scores_of(labels: torch.Tensor, predicted: torch.Tensor, classes: int,
              positive_scores: torch.Tensor | None = None) -> dict[str, Any]:
    confusion = torch.zeros(classes, classes, dtype=torch.int64)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    support, claimed, hits = confusion.sum(1), confusion.sum(0), confusion.diag()
    present = support > 0
    recall = hits.double() / support.clamp(min=1)
    precision = hits.double() / claimed.clamp(min=1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(recall))
    scores = {"accuracy": hits.sum().item() / len(labels),
              "balanced_accuracy": recall[present].mean().item(),
              "macro_f1": f1[present].mean().item(),
              "per_class_accuracy": [round(v, 6) if p else None for v, p in zip(recall.tolist(), present.tolist(),
                                                                                  strict=True)],
              "confusion": confusion.tolist()}
    if classes == 2 and positive_scores is not None and present.all():
        scores["roc_auc"] = roc_auc(labels, positive_scores)
    return scores


def roc_auc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """The probability that a random positive scores above a random negative (Mann-Whitney)."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    above = (positive[:, None] > negative[None, :]).sum() + 0.5 * (positive[:, None] == negative[None, :]).sum()
    return above.item() / (len(positive) * len(negative))


def imbalance(confusion: list[list[int]]) -> float:
    """The largest test class over the smallest (inf when one is empty)."""
    support = [sum(row) for row in confusion]
    return max(support) / min(support) if min(support) else float("inf")
