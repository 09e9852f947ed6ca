"""CPU latency of one forward pass: warm-up, then many timed rounds; median and IQR."""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from typing import Callable, Iterator

import torch

Timer = Callable[..., dict]  # (run, warmup, rounds, name) -> measure_latency's statistics


def measure_latency(run: Callable[[], object], warmup: int = 3, rounds: int = 20, name: str = "") -> dict[str, float]:
    """Milliseconds per call of ``run``: median, IQR (q3 - q1), min, and the round count.
    The harness's own timer; ``name`` (what is timed) is for timers that keep records."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
    return {"median_ms": statistics.median(times), "iqr_ms": q3 - q1, "min_ms": min(times), "rounds": len(times)}


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Pin torch's intra-op threads for the block."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model).cpu().eval()


def time_runners(runners: dict[str, Callable[[torch.Tensor], object]], size: int, batch_sizes: list[int],
                 warmup: int, rounds: int, threads: int, timer: Timer = measure_latency) -> dict[str, dict[str, float]]:
    """CPU latency of each named runner (images -> outputs) at each batch size of random
    ``size`` px images, back to back in this process, with ``threads`` torch threads:
    ``{"latency": {NAME_bB_ms: median}, "latency_iqr": {NAME_bB_iqr: q3 - q1}}``."""
    latency, spread = {}, {}
    with torch_threads(threads), torch.no_grad():
        for batch in batch_sizes:
            images = torch.rand(batch, 3, size, size)
            for name, runner in runners.items():
                stats = timer(lambda: runner(images), warmup, rounds, name=f"{name}_b{batch}")
                latency[f"{name}_b{batch}_ms"] = stats["median_ms"]
                spread[f"{name}_b{batch}_iqr"] = stats["iqr_ms"]
    return {"latency": latency, "latency_iqr": spread}


def eager_latency(models: dict[str, torch.nn.Module], size: int, batch_sizes: list[int], warmup: int,
                  rounds: int, threads: int, timer: Timer = measure_latency) -> dict[str, dict[str, float]]:
    """``time_runners`` of fp32 eager CPU copies of the named models."""
    copies = {name: cpu_copy(model) for name, model in models.items()}
    return time_runners(copies, size, batch_sizes, warmup, rounds, threads, timer)
