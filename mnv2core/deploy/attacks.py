"""The fast gradient sign method (FGSM) in [0, 1] pixel space."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``clamp(x + epsilon * sign(d loss / d x), 0, 1)`` with the cross-entropy loss of
    ``model`` (normalisation is inside the model, so epsilon is in pixel units)."""
    images = images.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(images), labels)
    (gradient,) = torch.autograd.grad(loss, images)
    return (images + epsilon * gradient.sign()).clamp(0, 1).detach()
