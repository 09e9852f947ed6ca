"""How much a heatmap means: deletion/insertion AUC (the class probability as the most
salient pixels are removed or revealed first) and how concentrated its mass is."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def deletion_insertion_auc(model: nn.Module, images: torch.Tensor, heatmaps: torch.Tensor,
                           classes: torch.Tensor, steps: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: AUC of the target-class probability while deleting (replacing by a blurred
    copy) the most salient pixels first, and while inserting them into the blurred copy.
    Faithful maps give a low deletion and a high insertion AUC."""
    baseline = F.avg_pool2d(images, kernel_size=9, stride=1, padding=4, count_include_pad=False)
    n, _, h, w = images.shape
    order = heatmaps.flatten(1).argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=images.device).expand(n, -1))
    rank = rank.view(n, 1, h, w)
    deletion, insertion = [], []
    for step in range(steps + 1):
        salient = rank < round(step / steps * h * w)
        deletion.append(_probability(model, torch.where(salient, baseline, images), classes))
        insertion.append(_probability(model, torch.where(salient, images, baseline), classes))
    return _auc(torch.stack(deletion, 1)), _auc(torch.stack(insertion, 1))


def concentration(heatmaps: torch.Tensor, top_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per heatmap: the share of its mass in its top ``top_fraction`` pixels, and its entropy
    normalised to [0, 1] (1 = spread evenly)."""
    flat = heatmaps.flatten(1).clamp_min(0)
    mass = flat / flat.sum(1, keepdim=True).clamp_min(1e-12)
    top = max(1, round(top_fraction * flat.shape[1]))
    top_share = mass.topk(top, dim=1).values.sum(1)
    entropy = -(mass * mass.clamp_min(1e-12).log()).sum(1) / torch.log(torch.tensor(float(flat.shape[1])))
    return top_share, entropy.clamp(0, 1)  # float rounding can overshoot 1 for a uniform map


def _probability(model: nn.Module, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return model(images).softmax(1).gather(1, classes.view(-1, 1)).squeeze(1)


def _auc(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoidal area under curves sampled evenly on [0, 1]."""
    return torch.trapezoid(curves, dx=1 / (curves.shape[1] - 1), dim=1)
