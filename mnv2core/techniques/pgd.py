"""PGD (projected gradient descent, Madry et al.; the attack is ``deploy.attacks.pgd``) on the
fp32 model and, through its fp32 twin's gradients, its int8 one."""
from __future__ import annotations

from typing import Any

from ..context import Artifact, Case, Context
from ..deploy.attacks import pgd
from ..metrics import info
from ..registry import DEPLOYMENT, Technique, present, register
from ..schema import Fraction, NonNegative, Parameters, Positive
from .fgsm import ATTACK_METRICS, attacked_metrics, check, rows


def measure(ctx: Context, case: Case, base: Artifact) -> dict[str, Any]:
    p = ctx.profile.deployments[case.method]
    attack = lambda m, x, y: pgd(m, x, y, p["epsilon"], p["step"], p["steps"])  # noqa: E731
    return {**attacked_metrics(ctx, case, base, attack, p["images"]), "epsilon": p["epsilon"], "step": p["step"],
            "steps": p["steps"]}


class PgdParameters(Parameters):
    epsilon: Fraction = 0.05
    step: Fraction = 0.01
    steps: Positive = 10
    images: NonNegative = 0


register(Technique("pgd", DEPLOYMENT, "PGD", measure=measure, reusable=True, check=check,
                   params=PgdParameters,
                   uses=("int8",),
                   metrics=(*ATTACK_METRICS, info("step", "pixel (0..1)"), info("steps", "count"))))
present("pgd", table=("PGD, L-inf (* int8 attacked with the gradients of its fp32 twin)", rows))
