"""What the deployment techniques share: a base model's test set on a device, its int8
calibration batches, its runtime twins (made once per process and kept while the base is
among the last measured: ``ctx.memo``'s scope) and its ONNX fp32 and ORT int8 files (cached
with the base's key)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from ..context import Artifact, Case, Context
from ..datasets import ImageSet, eval_batches
from ..execution import cpu_has_native_bf16
from ..fingerprint import code_fingerprint
from ..keys import ArtifactKey
from ..onnx_model import with_normalization
from ..schema import Fraction, Parameters, Positive
from . import openvino_runtime
from .compiled import CompileError, compile_bf16, compile_fp32, compile_pt2e_int8, eager_bf16
from .int8_fx import QuantizationError, quantize_fx
from .latency import cpu_copy
from .onnx_runtime import export_onnx, quantize_onnx_static

CALIBRATION_BATCH = 32  # images per int8 calibration batch (FX, ONNX Runtime and PT2E alike)
COMPILED = ("compiled_fp32", "pt2e_int8", "eager_bf16", "compiled_bf16")  # PyTorch's other runtimes
BF16 = ("eager_bf16", "compiled_bf16")
NO_BF16 = "not supported on this CPU: no native bf16 (AVX512-BF16 or AMX)"
OPENVINO = ("openvino_fp32", "openvino_int8")


class Int8Parameters(Parameters):
    calibration_batches: Positive = 8
    max_drop: Fraction = 0.05  # the check's: the most accuracy int8 may lose
    bias_correction: bool = True


INT8_DEFAULTS = Int8Parameters.defaults()


def test_set(ctx: Context, case: Case, base: Artifact, device, images: int = 0) -> ImageSet:
    """The base's test set at its input size on ``device``; ``images`` > 0: that many of it,
    spanning the classes (the same sample for every measurement that asks for that many)."""
    test = ctx.data_at(case.dataset, base.meta["input_size"]).test.to(torch.device(device))
    return test.spread(images) if images else test


def figure_path(ctx: Context, case: Case, kind: str) -> Path:
    """Where a measurement of ``case`` draws its ``kind`` figure: one per dataset, model and base."""
    return ctx.plots_dir / f"{case.dataset}-{case.model}-{case.base}-{kind}.png"


def int8_params(ctx: Context) -> dict:
    return ctx.profile.deployments.get("int8", INT8_DEFAULTS)


def calibration(ctx: Context, case: Case, base: Artifact) -> list[torch.Tensor]:
    """Calibration batches for FX and ORT int8 alike: training images taken in turn from every
    class (no augmentation). The first batches of a class-sorted image folder hold one class
    only (on Imagenette FX int8 scored the same either way: 0.855 and 0.850)."""
    size, count = base.meta["input_size"], int8_params(ctx)["calibration_batches"]

    def batches() -> list[torch.Tensor]:
        sample = ctx.data_at(case.dataset, size).train.spread(count * CALIBRATION_BATCH)
        return [images for images, _ in eval_batches(sample, CALIBRATION_BATCH)]

    return ctx.memo(("calibration", case.dataset, size, count), batches)  # FX, ORT and the record share it


def int8_model(ctx: Context, case: Case, base: Artifact) -> torch.nn.Module:
    """The FX int8 twin of the base; QuantizationError (NotApplicable) when FX cannot make one."""
    model, reason = int8_model_or_reason(ctx, case, base)
    if model is None:
        raise QuantizationError(reason)
    return model


def int8_model_or_reason(ctx: Context, case: Case, base: Artifact) -> tuple[torch.nn.Module | None, str]:
    """The FX int8 twin, or None and why FX cannot make one (measurements that include int8
    go on without it and say why); tried once per base in memory, failure included."""
    def attempt() -> tuple[torch.nn.Module | None, str]:
        try:
            return quantize_fx(base.model, calibration(ctx, case, base), base.meta["input_size"],
                               int8_params(ctx)["bias_correction"]), ""
        except QuantizationError as exc:
            return None, str(exc)

    return ctx.memo(("fx-int8", base.key), attempt, scope=base.key)


def compiled_twins(ctx: Context, case: Case, base: Artifact) -> dict[str, tuple[Any, float] | str]:
    """The base compiled by Inductor (fp32), quantized by PT2E then compiled (int8), and in bf16
    (eager and compiled) where the CPU computes bf16 natively: runtime -> (callable, seconds
    compiling took), or why it could not be made (one line; bf16 elsewhere: ``NO_BF16``, never
    fp32 under a bf16 label). Made once per base in memory; the first call (compiling) is
    made at batch 1, latency's first."""
    def attempt() -> dict[str, tuple[Any, float] | str]:
        model, size = cpu_copy(base.model).eval(), base.meta["input_size"]
        example = torch.rand(1, 3, size, size)
        makers = {"compiled_fp32": lambda: compile_fp32(model, example),
                  "pt2e_int8": lambda: compile_pt2e_int8(model, example, calibration(ctx, case, base)),
                  "eager_bf16": lambda: eager_bf16(model, example), "compiled_bf16": lambda: compile_bf16(model, example)}
        twins: dict[str, tuple[Any, float] | str] = {}
        for runtime, make in makers.items():
            if runtime in BF16 and not cpu_has_native_bf16():
                twins[runtime] = NO_BF16
                continue
            try:
                twins[runtime] = make()
            except CompileError as exc:
                twins[runtime] = str(exc)
        return twins

    return ctx.memo(("compiled", base.key), attempt, scope=base.key)


def openvino_twins(ctx: Context, case: Case, base: Artifact, threads: int = 1) -> dict[str, tuple | str]:
    """The base's ONNX export on OpenVINO (f32) and NNCF's int8 of it: runtime -> (callable,
    seconds quantizing and compiling took, the configuration it reports), or why it could not
    be made (one line: the extra missing, or the error). Made once per base in memory."""
    def attempt() -> dict[str, tuple | str]:
        if (reason := openvino_runtime.missing()) is not None:
            return dict.fromkeys(OPENVINO, reason)
        fp32_path, _ = onnx_files(ctx, case, base)
        makers = {"openvino_fp32": lambda: str(fp32_path),
                  "openvino_int8": lambda: openvino_runtime.quantize_int8(fp32_path, calibration(ctx, case, base))}
        twins: dict[str, tuple | str] = {}
        for runtime, make in makers.items():
            try:
                twins[runtime] = openvino_runtime.compiled(make, threads)
            except Exception as exc:  # OpenVINO and NNCF raise many kinds; each is one line here
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                twins[runtime] = f"{runtime} failed: {type(exc).__name__}: {first[:300]}"
        return twins

    return ctx.memo(("openvino", base.key, threads), attempt, scope=base.key)


def onnx_files(ctx: Context, case: Case, base: Artifact) -> tuple[Path, Path]:
    """The base exported to ONNX (fp32; an ONNX file's base: the file with the normalisation
    before it) and its ORT static int8 twin, kept in the cache under a key of the base's key
    and the calibration (so they match both) and made by one process at a time."""
    folder = ctx.cache_root / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    key = ArtifactKey(f"{case.dataset}-{case.model}-{case.base}", "onnx-export",
                      {"calibration_batches": int8_params(ctx)["calibration_batches"],
                       "bias_correction": int8_params(ctx)["bias_correction"], "calibration_batch": CALIBRATION_BATCH},
                      code_fingerprint("mnv2core.deploy.onnx_runtime"), upstream={"model": base.key})
    stem = folder / key.entry
    fp32_path, int8_path = stem.with_suffix(".onnx"), stem.with_suffix(".int8.onnx")
    with FileLock(f"{stem}.lock"):
        if not int8_path.exists():  # written last: its presence means both are complete
            if base.model.deploy_only:
                normalize = base.model.normalize
                with_normalization(base.model.net.path, fp32_path, tuple(normalize.mean.flatten().tolist()),
                                   tuple(normalize.std.flatten().tolist()))
            else:
                export_onnx(cpu_copy(base.model), base.meta["input_size"], fp32_path)
            partial = stem.with_suffix(".int8-partial.onnx")
            quantize_onnx_static(fp32_path, partial, calibration(ctx, case, base), int8_params(ctx)["bias_correction"])
            os.replace(partial, int8_path)
    return fp32_path, int8_path


@torch.no_grad()
def accuracy_on(model: torch.nn.Module, batches) -> float:
    """Top-1 accuracy over (float images, labels) batches."""
    model.eval()
    correct = total = 0
    for images, labels in batches:
        correct += int((model(images).argmax(1) == labels).sum())
        total += labels.shape[0]
    return correct / total
