"""PyTorch's compiled runtimes of a base model (``deploy.compiled``): Inductor-compiled fp32,
bf16 (eager and compiled, where the CPU has native bf16; elsewhere skipped as not supported)
and PT2E int8 (torchao's X86InductorQuantizer, compiled), their test accuracy, agreement with
eager PyTorch and compile time. Their latency is timed by the latency technique, beside the
other runtimes; compiling is never part of it. A runtime that cannot be made is skipped with
its error in one line; the other goes on."""
from __future__ import annotations

from typing import Any

import torch

from ..context import Artifact, Case, Context
from ..datasets import eval_batches
from ..deploy.compiled import versions
from ..deploy.latency import cpu_copy
from ..deploy.twins import BF16, COMPILED, compiled_twins, test_set
from ..execution import cpu_has_native_bf16
from ..metrics import LOWER, Metric, accuracy, info
from ..registry import DEPLOYMENT, Technique, present, register, require
from ..schema import Fraction, Parameters, Positive

METRICS = (
    accuracy(doc="test accuracy of the Inductor-compiled fp32 model", runtime="compiled fp32"),
    accuracy("pt2e_int8_accuracy", "test accuracy of PT2E int8, compiled", runtime="PT2E int8"),
    accuracy("eager_bf16_accuracy", "test accuracy of eager PyTorch in bf16 (CPUs with native bf16)",
             runtime="eager bf16"),
    accuracy("compiled_bf16_accuracy", "test accuracy of Inductor-compiled bf16 (CPUs with native bf16)",
             runtime="compiled bf16"),
    accuracy("eager_accuracy", "test accuracy of the eager fp32 model on the same images", gated=False),
    accuracy("top1_agreement", "share of test images where compiled fp32 and eager pick the same class"),
    Metric("pt2e_int8_drop", "fraction", LOWER, True, "accuracy", doc="eager fp32 minus PT2E int8 accuracy"),
    info("compile_seconds.*", "s", "quantizing (PT2E) and compiling, first call included; never part of latency"),
    info("skipped", "text", "runtimes that could not be made, and why"), info("max_drop", "fraction"),
    info("versions", "config", "torch, torchao and the CPU capability ATen dispatched to"),
)


class CompiledParameters(Parameters):
    max_drop: Fraction = 0.05  # the check's: the most accuracy PT2E int8 may lose against eager fp32
    # the batch the compiled runtimes are scored in: each new batch shape compiles again, so
    # the shape latency times (the first call compiles at batch 1)
    batch_size: Positive = 32


def machine() -> dict[str, Any]:
    """Inductor generates kernels for this CPU's ISA: its accuracy is of that ISA, and bf16
    runs only where the CPU computes it natively."""
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_has_native_bf16()}


def measure(ctx: Context, case: Case, base: Artifact) -> dict[str, Any]:
    twins = compiled_twins(ctx, case, base)
    made = {runtime: twin[0] for runtime, twin in twins.items() if not isinstance(twin, str)}
    eager = cpu_copy(base.model).eval()
    test = test_set(ctx, case, base, "cpu")
    correct = {name: 0 for name in ("eager", *made)}
    agree = 0
    with torch.no_grad():
        for images, labels in eval_batches(test, ctx.profile.deployments[case.method]["batch_size"]):
            reference = eager(images).argmax(1)
            correct["eager"] += int((reference == labels).sum())
            for runtime, run in made.items():
                predicted = run(images).argmax(1)
                correct[runtime] += int((predicted == labels).sum())
                agree += int((predicted == reference).sum()) if runtime == "compiled_fp32" else 0
    scores = {runtime: hits / len(test) for runtime, hits in correct.items()}
    metrics = {"eager_accuracy": scores["eager"], "versions": versions(),
               "compile_seconds": {runtime: twin[1] for runtime, twin in twins.items() if not isinstance(twin, str)},
               "skipped": {runtime: twin for runtime, twin in twins.items() if isinstance(twin, str)},
               "max_drop": ctx.profile.deployments[case.method]["max_drop"]}
    if "compiled_fp32" in made:
        metrics.update(accuracy=scores["compiled_fp32"], top1_agreement=agree / len(test))
    if "pt2e_int8" in made:
        metrics.update(pt2e_int8_accuracy=scores["pt2e_int8"],
                       pt2e_int8_drop=scores["eager"] - scores["pt2e_int8"])
    metrics.update({f"{runtime}_accuracy": scores[runtime] for runtime in BF16 if runtime in made})
    return metrics


def check(m: dict, case: Case) -> None:
    require(set(m["compile_seconds"]) | set(m["skipped"]) == set(COMPILED), f"runtimes missing: {m}")
    if "top1_agreement" in m:
        require(m["top1_agreement"] >= 0.99, f"compiled fp32 agrees with eager on {m['top1_agreement']:.4f} only")
    if "pt2e_int8_drop" in m:
        require(m["pt2e_int8_drop"] <= m["max_drop"],
                f"PT2E int8 loses {100 * m['pt2e_int8_drop']:.1f} points, more than max_drop {m['max_drop']}")
    for runtime in BF16:
        if f"{runtime}_accuracy" in m:
            drop = m["eager_accuracy"] - m[f"{runtime}_accuracy"]
            require(drop <= m["max_drop"], f"{runtime} loses {100 * drop:.1f} points, more than max_drop {m['max_drop']}")


def rows(found) -> list[dict]:
    return [{"model": base, "eager acc": f"{m['eager_accuracy']:.3f}",
             "compiled fp32 acc": f"{m['accuracy']:.3f}" if "accuracy" in m else "skipped",
             "PT2E int8 acc": f"{m['pt2e_int8_accuracy']:.3f}" if "pt2e_int8_accuracy" in m else "skipped",
             "bf16 acc (eager / compiled)": " / ".join(f"{m[f'{r}_accuracy']:.3f}" if f"{r}_accuracy" in m
                                                       else "-" for r in BF16),
             "compile s (fp32 / int8 / bf16)": " / ".join(f"{m['compile_seconds'][r]:.1f}"
                                                          if r in m["compile_seconds"] else "-"
                                                          for r in ("compiled_fp32", "pt2e_int8", "compiled_bf16"))}
            for base, m in found if "eager_accuracy" in m]


register(Technique("compiled", DEPLOYMENT, "PyTorch compiled (Inductor fp32, PT2E int8, bf16)", measure=measure,
                   reusable=True, machine=machine, check=check, params=CompiledParameters, thresholds=("max_drop",),
                   metrics=METRICS))
present("compiled", table=("PyTorch compiled: Inductor fp32, PT2E int8 (torchao X86InductorQuantizer), bf16 "
                           "where the CPU has it", rows))
