"""PGD (projected gradient descent, Madry et al.): FGSM's step repeated ``steps`` times with
step size ``step``, each time projected back into the L-infinity ball of radius ``epsilon``
around the clean image and into [0, 1]; on the fp32 model and, through its fp32 twin's
gradients, its int8 one. Starts from the clean image (no random start: reruns are identical)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..context import Artifact, Case, Context
from ..metrics import info
from ..registry import DEPLOYMENT, Technique, register
from .fgsm import ATTACK_METRICS, attacked_metrics, check, rows


def pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: float, step: float,
        steps: int) -> torch.Tensor:
    """Adversarial images within ``epsilon`` (pixel units, [0, 1] images) of ``images``."""
    clean = images.detach()
    adversarial = clean.clone()
    for _ in range(steps):
        adversarial.requires_grad_(True)
        loss = F.cross_entropy(model(adversarial), labels)
        (gradient,) = torch.autograd.grad(loss, adversarial)
        adversarial = adversarial.detach() + step * gradient.sign()
        adversarial = torch.min(torch.max(adversarial, clean - epsilon), clean + epsilon).clamp(0, 1)
    return adversarial.detach()


def measure(ctx: Context, case: Case, base: Artifact) -> dict[str, Any]:
    p = ctx.profile.deployments[case.method]
    attack = lambda m, x, y: pgd(m, x, y, p["epsilon"], p["step"], p["steps"])  # noqa: E731
    return {**attacked_metrics(ctx, case, base, attack, p["images"]), "epsilon": p["epsilon"], "step": p["step"],
            "steps": p["steps"]}


register(Technique("pgd", DEPLOYMENT, "PGD", measure=measure, reusable=True, check=check,
                   params={"epsilon": 0.05, "step": 0.01, "steps": 10, "images": 0},
                   ranges={"epsilon": (0, 1), "step": (0, 1), "steps": (1, None)},
                   table=("PGD, L-inf (* int8 attacked with the gradients of its fp32 twin)", rows), uses=("int8",),
                   metrics=(*ATTACK_METRICS, info("step", "pixel (0..1)"), info("steps", "count"))))
