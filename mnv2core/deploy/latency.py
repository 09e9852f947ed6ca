"""CPU latency of forward passes: warm-up, then timed rounds that take every runner in turn;
median and IQR per runner."""
from __future__ import annotations

import contextlib
import copy
import functools
import statistics
import time
from collections.abc import Callable, Iterator

import torch

# (runs: {name: call}, warmup, rounds) -> {name: measure_latencies' statistics}
Timer = Callable[..., dict]


def measure_latencies(runs: dict[str, Callable[[], object]], warmup: int = 3,
                      rounds: int = 20) -> dict[str, dict[str, float]]:
    """Milliseconds per call of each named run: median, IQR (q3 - q1), min, and the round
    count. The harness's own timer. Each round times every run once, the order rotated by one
    per round, so that whatever else loads the CPU meanwhile (another worker training) slows
    every run alike and their ratios hold."""
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            runs[name]()
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: _statistics(samples) for name, samples in times.items()}


def _statistics(times: list[float]) -> dict[str, float]:
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
                 warmup: int, rounds: int, threads: int, timer: Timer = measure_latencies) -> dict[str, dict[str, float]]:
    """CPU latency of each named runner (images -> outputs) at each batch size of random
    ``size`` px images, in this process with ``threads`` torch threads, all runners of a batch
    size timed together by ``timer``:
    ``{"latency": {NAME_bB_ms: median}, "latency_iqr": {NAME_bB_iqr: q3 - q1}}``."""
    latency, spread = {}, {}
    with torch_threads(threads), torch.no_grad():
        for batch in batch_sizes:
            images = torch.rand(batch, 3, size, size)
            runs = {f"{name}_b{batch}": functools.partial(runner, images) for name, runner in runners.items()}
            for name, stats in timer(runs, warmup, rounds).items():
                latency[f"{name}_ms"] = stats["median_ms"]
                spread[f"{name}_iqr"] = stats["iqr_ms"]
    return {"latency": latency, "latency_iqr": spread}


def eager_latency(models: dict[str, torch.nn.Module], size: int, batch_sizes: list[int], warmup: int,
                  rounds: int, threads: int, timer: Timer = measure_latencies) -> dict[str, dict[str, float]]:
    """``time_runners`` of fp32 eager CPU copies of the named models."""
    copies = {name: cpu_copy(model) for name, model in models.items()}
    return time_runners(copies, size, batch_sizes, warmup, rounds, threads, timer)
