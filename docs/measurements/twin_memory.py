"""Resident memory of one process that builds a 96 px MobileNetV2's runtime twins (Inductor
fp32, PT2E int8, FX int8, OpenVINO f32 and NNCF int8) and runs each at batch 64, base after
base: all kept (as a worker did before ctx.memo took scopes), or each base's dropped before
the next (as a worker does now).

    python docs/measurements/twin_memory.py keep 3
    python docs/measurements/twin_memory.py drop 3
"""
import gc
import sys
import tempfile
from pathlib import Path

import torch
import torchvision

from mnv2core.deploy import openvino_runtime
from mnv2core.deploy.compiled import compile_fp32, compile_pt2e_int8
from mnv2core.deploy.int8_fx import quantize_fx
from mnv2core.deploy.onnx_runtime import export_onnx
from mnv2core.execution import keep_freed_memory


def resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def twins(model: torch.nn.Module, calibration: list[torch.Tensor], folder: Path) -> dict:
    example, onnx = torch.rand(1, 3, 96, 96), export_onnx(model, 96, folder / f"{id(model)}.onnx")
    return {"compiled": compile_fp32(model, example)[0],
            "pt2e": compile_pt2e_int8(model, example, calibration)[0],
            "fx": quantize_fx(model, calibration, 96, True),
            "openvino_f32": openvino_runtime.compiled(lambda: str(onnx), 1)[0],
            "openvino_int8": openvino_runtime.compiled(lambda: openvino_runtime.quantize_int8(onnx, calibration), 1)[0]}


def main(mode: str, bases: int) -> None:
    keep_freed_memory()  # the harness's allocator setting
    torch.set_num_threads(1)
    calibration, kept = [torch.rand(32, 3, 96, 96) for _ in range(8)], []
    print(f"start: {resident_mb():.0f} MB")
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        for base in range(bases):
            made = twins(torchvision.models.mobilenet_v2(num_classes=10).eval(), calibration, Path(folder))
            for run in made.values():
                for _ in range(3):
                    run(torch.rand(64, 3, 96, 96))
            print(f"base {base}: {resident_mb():.0f} MB with its twins", flush=True)
            if mode == "keep":
                kept.append(made)
            else:
                del made
                gc.collect()
                print(f"base {base}: {resident_mb():.0f} MB once they are dropped", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
