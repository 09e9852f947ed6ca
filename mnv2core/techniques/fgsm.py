"""FGSM: accuracy of a base model (and of its int8 twin) on adversarial images."""
from __future__ import annotations

from typing import Any

import torch

from ..context import Artifact, Case, Context
from ..datasets import eval_batches
from ..deploy.attacks import fgsm
from ..deploy.twins import accuracy_on, int8_model_or_reason, test_set
from ..metrics import accuracy, info
from ..registry import DEPLOYMENT, Technique, present, register, require
from ..schema import Fraction, NonNegative, Parameters
from ..training import evaluate

INT8_NOTE = "int8 model attacked with the gradients of its fp32 twin (int8 has none)"


ATTACK_METRICS = (
    accuracy(doc="test accuracy on the adversarial images"),
    accuracy("clean_accuracy", "the same images unattacked", gated=False),
    accuracy("int8_fgsm_accuracy", "the int8 twin on the adversarial images (transferred from fp32)"),
    accuracy("int8_clean_accuracy", "the int8 twin on the clean images", gated=False),
    info("int8_note", "text"), info("int8_skipped", "text", "why there is no int8 twin"),
    info("images", "count", "test images attacked"), info("epsilon", "pixel (0..1)"),
)


def attacked_metrics(ctx: Context, case: Case, base: Artifact, attack, images: int = 0) -> dict[str, Any]:
    """Accuracy on the test set (``images`` > 0: that many, spanning the classes) before and
    after ``attack(model, images, labels)``, and of the base's int8 twin on the same
    adversarial images when the profile has int8."""
    model = base.model.eval()
    test = test_set(ctx, case, base, ctx.device, images)
    batch = ctx.profile.eval_batch_size
    attacked = [(attack(model, images, labels), labels) for images, labels in eval_batches(test, batch)]
    metrics = {"accuracy": accuracy_on(model, attacked), "clean_accuracy": evaluate(model, test, batch),
               "images": len(test)}
    int8, skipped = int8_model_or_reason(ctx, case, base) if "int8" in ctx.profile.deployments else (None, "")
    if skipped:
        metrics["int8_skipped"] = skipped
    if int8 is not None:
        on_cpu = [(images.cpu(), labels.cpu()) for images, labels in attacked]
        metrics.update({"int8_fgsm_accuracy": accuracy_on(int8, on_cpu),
                        "int8_clean_accuracy": evaluate(int8, test.to(torch.device("cpu")), batch),
                        "int8_note": INT8_NOTE})
    return metrics


def measure(ctx: Context, case: Case, base: Artifact) -> dict[str, Any]:
    p = ctx.profile.deployments[case.method]
    attack = lambda m, x, y: fgsm(m, x, y, p["epsilon"])  # noqa: E731
    return {**attacked_metrics(ctx, case, base, attack, p["images"]), "epsilon": p["epsilon"]}


def check(m: dict, case: Case) -> None:
    require(m["accuracy"] <= m["clean_accuracy"], f"the attack raised accuracy: {m['accuracy']} > {m['clean_accuracy']}")
    if "int8_fgsm_accuracy" in m:
        require(m["int8_fgsm_accuracy"] <= m["int8_clean_accuracy"] + 0.02, "the transferred attack raised int8 accuracy")


def rows(found) -> list[dict]:
    return [{"model": base, "epsilon": m["epsilon"], "images": m.get("images", ""), "clean acc": f"{m['clean_accuracy']:.3f}",
             "attacked acc": f"{m['accuracy']:.3f}",
             "int8 clean": f"{m['int8_clean_accuracy']:.3f}" if "int8_clean_accuracy" in m else "not run",
             "int8 attacked*": f"{m['int8_fgsm_accuracy']:.3f}" if "int8_fgsm_accuracy" in m else "not run"}
            for base, m in found if "clean_accuracy" in m]


# images: test images attacked (0: all; else a sample spanning the classes)
class FgsmParameters(Parameters):
    epsilon: Fraction = 0.05  # in pixel units of [0, 1] images
    images: NonNegative = 0  # test images attacked, spanning the classes (0: all)


register(Technique("fgsm", DEPLOYMENT, "FGSM", measure=measure, reusable=True, check=check, params=FgsmParameters,
                   uses=("int8",), metrics=ATTACK_METRICS))
present("fgsm", table=("FGSM (* int8 attacked with the gradients of its fp32 twin)", rows),
        summary_column=("FGSM acc", "accuracy"))
