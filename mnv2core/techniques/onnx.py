"""ONNX export (fp32) and ONNX Runtime static int8 of a base model: agreement with PyTorch."""
from __future__ import annotations

from typing import Any

import torch

from ..context import Artifact, Case, Context
from ..datasets import eval_batches
from ..deploy.latency import cpu_copy
from ..deploy.onnx_runtime import int8_kernels, ort_int8_session, ort_logits, ort_session
from ..deploy.twins import onnx_files, test_set
from ..metrics import accuracy, info
from ..registry import DEPLOYMENT, Technique, present, register, require
from ..schema import Fraction, Parameters

METRICS = (
    accuracy(doc="test accuracy of the ONNX model in ONNX Runtime", runtime="ORT fp32"),
    accuracy("ort_int8_accuracy", "test accuracy of ORT's static int8 (QDQ) model", runtime="ORT int8"),
    accuracy("top1_agreement", "share of test images where ORT and PyTorch pick the same class"),
    info("min_top1_agreement", "fraction", "the least agreement the check allows (the profile's)"),
    info("max_abs_logit_diff", "logit", better="lower"), info("onnx_file", "path"),
    info("onnx_bytes", "bytes", better="lower"), info("onnx_int8_bytes", "bytes", better="lower"),
    info("ort_int8", "config", "how the int8 model is quantized and which kernels ran it, and the CPU flags "
                               "that chose them"),
)


def int8_machine() -> dict[str, Any]:
    """What of this machine ORT int8's accuracy depends on: its kernels (exact or fast)."""
    return {"ort_int8_session_options": int8_kernels().session_options}


def measure(ctx: Context, case: Case, base: Artifact) -> dict[str, Any]:
    fp32_path, int8_path = onnx_files(ctx, case, base)
    kernels = int8_kernels()
    session, int8_session = ort_session(fp32_path), ort_int8_session(int8_path)
    model = cpu_copy(base.model).eval()
    test = test_set(ctx, case, base, "cpu")
    max_diff, agree, correct, int8_correct = 0.0, 0, 0, 0
    with torch.no_grad():
        for images, labels in eval_batches(test, ctx.profile.eval_batch_size):
            reference, logits = model(images), ort_logits(session, images)
            max_diff = max(max_diff, float((reference - logits).abs().max()))
            agree += int((reference.argmax(1) == logits.argmax(1)).sum())
            correct += int((logits.argmax(1) == labels).sum())
            int8_correct += int((ort_logits(int8_session, images).argmax(1) == labels).sum())
    return {"accuracy": correct / len(test), "max_abs_logit_diff": max_diff, "top1_agreement": agree / len(test),
            "min_top1_agreement": ctx.profile.deployments[case.method]["min_top1_agreement"],
            "ort_int8_accuracy": int8_correct / len(test), "onnx_file": str(fp32_path),
            "onnx_bytes": fp32_path.stat().st_size, "onnx_int8_bytes": int8_path.stat().st_size,
            "ort_int8": kernels.record()}


def check(m: dict, case: Case) -> None:
    require(m["top1_agreement"] >= m["min_top1_agreement"],
            f"ONNX Runtime agrees with PyTorch on {m['top1_agreement']:.4f} of the top-1 predictions")
    require(m["max_abs_logit_diff"] < 1e-3, f"logits differ by up to {m['max_abs_logit_diff']:.2e}")


def rows(found) -> list[dict]:
    return [{"model": base, "ONNX acc": f"{m['accuracy']:.3f}", "ORT int8 acc": f"{m['ort_int8_accuracy']:.3f}",
             "top-1 agreement": f"{m['top1_agreement']:.4f}",
             "max abs logit diff": f"{m['max_abs_logit_diff']:.2e}",
             "MB fp32 / int8": f"{m['onnx_bytes'] / 1e6:.2f} / {m['onnx_int8_bytes'] / 1e6:.2f}"}
            for base, m in found if "top1_agreement" in m]


class OnnxParameters(Parameters):
    min_top1_agreement: Fraction = 0.999  # the check's: ORT fp32 against PyTorch


register(Technique("onnx", DEPLOYMENT, "ONNX Runtime", measure=measure, reusable=True, machine=int8_machine,
                   check=check, params=OnnxParameters,
                   thresholds=("min_top1_agreement",), uses=("int8",), metrics=METRICS, takes_onnx=True))
present("onnx", table=("ONNX Runtime (fp32, and static int8 QDQ) against PyTorch", rows))
