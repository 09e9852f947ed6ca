"""OpenVINO, an optional runtime (``deploy.openvino_runtime``): the base's ONNX export in f32
and NNCF's post-training int8 of it, their test accuracy, agreement with PyTorch and the time
quantizing and compiling took. Their latency is timed by the latency technique, beside the
other runtimes. Without the extra installed the case is skipped, its reason naming the extra."""
from __future__ import annotations

from typing import Any

import torch

from ..context import Artifact, Case, Context
from ..datasets import eval_batches
from ..deploy.latency import cpu_copy
from ..deploy.openvino_runtime import require as require_openvino
from ..deploy.openvino_runtime import versions
from ..deploy.twins import OPENVINO, openvino_twins, test_set
from ..execution import int8_dot_product
from ..metrics import LOWER, Metric, accuracy, info
from ..registry import DEPLOYMENT, Technique, present, register, require
from ..schema import Fraction, Parameters

METRICS = (
    accuracy(doc="test accuracy of the ONNX export on OpenVINO, inference precision f32", runtime="OpenVINO fp32"),
    accuracy("openvino_int8_accuracy", "test accuracy of NNCF's post-training int8 on OpenVINO",
             runtime="OpenVINO int8"),
    accuracy("eager_accuracy", "test accuracy of the eager fp32 model on the same images", gated=False),
    accuracy("top1_agreement", "share of test images where OpenVINO fp32 and eager PyTorch pick the same class"),
    Metric("openvino_int8_drop", "fraction", LOWER, True, "accuracy", doc="eager fp32 minus OpenVINO int8 accuracy"),
    info("prepare_seconds.*", "s", "quantizing (NNCF) and compiling; never part of latency"),
    info("configuration.*", "config", "what each compiled model reports: precision, threads, hint"),
    info("skipped", "text", "runtimes that could not be made, and why"), info("max_drop", "fraction"),
    info("versions", "config", "OpenVINO, NNCF and the CPU plugin's capabilities"),
)


class OpenVinoParameters(Parameters):
    max_drop: Fraction = 0.05  # the check's: the most accuracy OpenVINO int8 may lose against eager fp32


def machine() -> dict[str, Any]:
    """OpenVINO picks its kernels by the CPU's ISA (int8 with or without a dot product), and
    its versions decide the numbers."""
    require_openvino()
    return {**versions(), "int8_dot_product": int8_dot_product()}


def measure(ctx: Context, case: Case, base: Artifact) -> dict[str, Any]:
    require_openvino()
    twins = openvino_twins(ctx, case, base)
    made = {runtime: twin[0] for runtime, twin in twins.items() if not isinstance(twin, str)}
    eager = cpu_copy(base.model).eval()
    test = test_set(ctx, case, base, "cpu")
    correct = {name: 0 for name in ("eager", *made)}
    agree = 0
    with torch.no_grad():
        for images, labels in eval_batches(test, ctx.profile.eval_batch_size):
            reference = eager(images).argmax(1)
            correct["eager"] += int((reference == labels).sum())
            for runtime, run in made.items():
                predicted = run(images).argmax(1)
                correct[runtime] += int((predicted == labels).sum())
                agree += int((predicted == reference).sum()) if runtime == "openvino_fp32" else 0
    scores = {runtime: hits / len(test) for runtime, hits in correct.items()}
    built = {runtime: twin for runtime, twin in twins.items() if not isinstance(twin, str)}
    metrics = {"eager_accuracy": scores["eager"], "versions": versions(),
               "prepare_seconds": {runtime: twin[1] for runtime, twin in built.items()},
               "configuration": {runtime: twin[2] for runtime, twin in built.items()},
               "skipped": {runtime: twin for runtime, twin in twins.items() if isinstance(twin, str)},
               "max_drop": ctx.profile.deployments[case.method]["max_drop"]}
    if "openvino_fp32" in made:
        metrics.update(accuracy=scores["openvino_fp32"], top1_agreement=agree / len(test))
    if "openvino_int8" in made:
        metrics.update(openvino_int8_accuracy=scores["openvino_int8"],
                       openvino_int8_drop=scores["eager"] - scores["openvino_int8"])
    return metrics


def check(m: dict, case: Case) -> None:
    require(set(m["prepare_seconds"]) | set(m["skipped"]) == set(OPENVINO), f"runtimes missing: {m}")
    if "top1_agreement" in m:
        require(m["top1_agreement"] >= 0.99, f"OpenVINO fp32 agrees with eager on {m['top1_agreement']:.4f} only")
    for runtime, reported in m["configuration"].items():
        require(runtime.endswith("int8") or reported["INFERENCE_PRECISION_HINT"] == "f32",
                f"{runtime} ran at {reported['INFERENCE_PRECISION_HINT']}, not f32")
    if "openvino_int8_drop" in m:
        require(m["openvino_int8_drop"] <= m["max_drop"],
                f"OpenVINO int8 loses {100 * m['openvino_int8_drop']:.1f} points, more than max_drop {m['max_drop']}")


def rows(found) -> list[dict]:
    return [{"model": base, "eager acc": f"{m['eager_accuracy']:.3f}",
             "OpenVINO fp32 acc": f"{m['accuracy']:.3f}" if "accuracy" in m else "skipped",
             "OpenVINO int8 acc": f"{m['openvino_int8_accuracy']:.3f}" if "openvino_int8_accuracy" in m else "skipped",
             "prepare s (fp32 / int8)": " / ".join(f"{m['prepare_seconds'][r]:.1f}" if r in m["prepare_seconds"]
                                                   else "-" for r in OPENVINO)}
            for base, m in found if "eager_accuracy" in m]


register(Technique("openvino", DEPLOYMENT, "OpenVINO (f32, NNCF int8)", measure=measure, reusable=True,
                   machine=machine, check=check, params=OpenVinoParameters, thresholds=("max_drop",),
                   metrics=METRICS, takes_onnx=True))
present("openvino", table=("OpenVINO: the ONNX export at f32, and NNCF post-training int8", rows))
