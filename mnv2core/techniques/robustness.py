"""Accuracy of a base model under Gaussian blur and Gaussian noise of growing sigma (on the
test set, or ``images`` of it spanning the classes)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..context import Artifact, Case, Context
from ..datasets import eval_batches
from ..deploy.robustness import gaussian_blur, gaussian_noise, plot_robustness, plot_robustness_curves
from ..deploy.twins import accuracy_on, figure_path, test_set
from ..metrics import accuracy, figure, info
from ..registry import DEPLOYMENT, Technique, present, register, require
from ..schema import Amount, Fraction, NonNegative, Parameters
from ..training import evaluate

METRICS = (
    accuracy(doc="clean test accuracy (the base's, measured here)", gated=False),
    accuracy("blur.*", "test accuracy under Gaussian blur of that sigma"),
    accuracy("noise.*", "test accuracy under additive Gaussian noise of that sigma"),
    info("images", "count"), figure("plot", "accuracy against sigma"),
)


def measure(ctx: Context, case: Case, base: Artifact) -> dict[str, Any]:
    params = ctx.profile.deployments[case.method]
    model = base.model.eval()
    test = test_set(ctx, case, base, ctx.device, params["images"])
    batch = ctx.profile.eval_batch_size
    generator = torch.Generator(device=test.images.device).manual_seed(ctx.seed_for(case.dataset, "noise"))

    def corrupted(transform):
        return accuracy_on(model, ((transform(images), labels) for images, labels in eval_batches(test, batch)))

    blur = {f"sigma_{s:g}_accuracy": corrupted(lambda x, s=s: gaussian_blur(x, s)) for s in params["blur_sigmas"]}
    noise = {f"sigma_{s:g}_accuracy": corrupted(lambda x, s=s: gaussian_noise(x, s, generator))
             for s in params["noise_sigmas"]}
    clean = evaluate(model, test, batch)
    plot = plot_robustness(clean, params["blur_sigmas"], list(blur.values()), params["noise_sigmas"],
                           list(noise.values()), figure_path(ctx, case, "robustness"),
                           f"{case.dataset} {case.model} {case.base}")
    return {"accuracy": clean, "blur": blur, "noise": noise, "images": len(test), "plot": str(plot)}


def check(m: dict, case: Case) -> None:
    # the strongest corruption may not raise accuracy beyond sampling noise (3 standard errors
    # of the clean accuracy on this many images): a weak model on a small test set can gain a
    # few images from blur, a corruption that is not applied gains nothing systematically
    noise = 0.02 + 3 * math.sqrt(m["accuracy"] * (1 - m["accuracy"]) / m["images"])
    strongest_blur, strongest_noise = list(m["blur"].values())[-1], list(m["noise"].values())[-1]
    require(max(strongest_blur, strongest_noise) <= m["accuracy"] + noise,
            f"the strongest corruption raised accuracy beyond noise ({noise:.3f}): blur {strongest_blur}, "
            f"noise {strongest_noise}, clean {m['accuracy']}")
    require(Path(m["plot"]).read_bytes()[:4] == b"\x89PNG", f"{m['plot']} is not a PNG")


def rows(found) -> list[dict]:
    rows = []
    for base, m in found:
        row = {"model": base, "clean": f"{m['accuracy']:.3f}"}
        for kind in ("blur", "noise"):
            row.update({f"{kind} {k.split('_')[1]}": f"{v:.3f}" for k, v in m.get(kind, {}).items()})
        row["plot"] = m.get("plot", "")
        rows.append(row)
    return rows


class RobustnessParameters(Parameters):
    blur_sigmas: list[Amount] = [0.5, 1.0, 2.0]  # px
    noise_sigmas: list[Fraction] = [0.05, 0.1, 0.2]  # pixel units of [0, 1] images
    images: NonNegative = 0


register(Technique("robustness", DEPLOYMENT, "Blur and noise", measure=measure, reusable=True, check=check,
                   params=RobustnessParameters, metrics=METRICS, takes_onnx=True))
present("robustness", table=("Robustness: accuracy under Gaussian blur and noise (sigma)", rows),
        page_plot=plot_robustness_curves)
