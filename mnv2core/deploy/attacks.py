"""Gradient attacks in [0, 1] pixel space: the fast gradient sign method (FGSM) and PGD."""
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


def pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: float, step: float,
        steps: int) -> torch.Tensor:
    """PGD (projected gradient descent, Madry et al.): FGSM's step repeated ``steps`` times with
    step size ``step``, each time projected back into the L-infinity ball of radius ``epsilon``
    (pixel units, [0, 1] images) around ``images`` and into [0, 1]. Starts from the clean
    images (no random start: reruns are identical)."""
    clean = images.detach()
    adversarial = clean.clone()
    for _ in range(steps):
        adversarial.requires_grad_(True)
        loss = F.cross_entropy(model(adversarial), labels)
        (gradient,) = torch.autograd.grad(loss, adversarial)
        adversarial = adversarial.detach() + step * gradient.sign()
        adversarial = torch.min(torch.max(adversarial, clean - epsilon), clean + epsilon).clamp(0, 1)
    return adversarial.detach()
