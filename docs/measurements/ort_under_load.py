"""ONNX Runtime fp32 against int8 at batch 1, one thread, alone and beside CPU hogs, timed in
alternating rounds; each run's CPU share (process CPU seconds per wall second).

    python docs/measurements/ort_under_load.py .mnv2cache/onnx/synthetic96-mobilenet_v2-full_ft-*.onnx
"""
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from mnv2core.deploy.onnx_runtime import int8_kernels, ort_session


def hog(kind: str) -> None:
    if kind == "spin":
        while True:
            pass
    import torch
    torch.set_num_threads(2 if kind == "matmul x2" else 1)
    a = torch.rand(512, 512)
    while True:
        a @ a


def measure(label: str, fp32: Path, rounds: int = 40, warmup: int = 3) -> None:
    sessions = {"fp32": ort_session(fp32, 1),
                "int8": ort_session(fp32.with_suffix(".int8.onnx"), 1, int8_kernels().session_options)}
    feed = {"images": np.random.rand(1, 3, 96, 96).astype(np.float32)}
    for _ in range(warmup):
        for session in sessions.values():
            session.run(None, feed)
    wall = {name: [] for name in sessions}
    cpu = dict.fromkeys(sessions, 0.0)
    names = list(sessions)
    for round_ in range(rounds):
        for name in names[round_ % 2:] + names[:round_ % 2]:
            started_cpu, started = time.process_time(), time.perf_counter()
            sessions[name].run(None, feed)
            wall[name].append(time.perf_counter() - started)
            cpu[name] += time.process_time() - started_cpu
    median = {name: statistics.median(times) * 1000 for name, times in wall.items()}
    share = {name: cpu[name] / sum(wall[name]) for name in sessions}
    print(f"{label:24s} fp32 {median['fp32']:.2f} ms  int8 {median['int8']:.2f} ms  "
          f"ratio {median['fp32'] / median['int8']:.2f}x  CPU share {share['fp32']:.2f} / {share['int8']:.2f}")


if __name__ == "__main__":
    model = Path(next(a for a in sys.argv[1:] if not a.endswith(".int8.onnx")))  # the glob names both
    measure("alone", model)
    for kind, count in (("spin", 2), ("spin", 3), ("matmul", 3), ("matmul x2", 2)):
        hogs = [multiprocessing.Process(target=hog, args=(kind,), daemon=True) for _ in range(count)]
        for process in hogs:
            process.start()
        time.sleep(1)
        measure(f"beside {count} {kind}", model)
        for process in hogs:
            process.terminate()
        time.sleep(0.5)
    measure("alone again", model)
