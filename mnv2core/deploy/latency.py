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
    """Milliseconds per call of each named run: median, IQR (q3 - q1), min, the round count,
    and its CPU share. The harness's own timer. Each round times every run once, the order
    rotated by one per round, so that whatever else loads the CPU meanwhile (another worker
    training) slows every run alike and their ratios hold."""
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    busy: dict[str, float] = dict.fromkeys(names, 0.0)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            cpu, started = time.process_time(), time.perf_counter()
            runs[name]()
            times[name].append((time.perf_counter() - started) * 1000)
            busy[name] += time.process_time() - cpu
    return {name: {**_statistics(samples), "cpu_share": cpu_share(busy[name], sum(samples) / 1000)}
            for name, samples in times.items()}


def cpu_share(cpu_seconds: float, wall_seconds: float) -> float:
    """CPU seconds this process spent per wall-clock second: about the threads it ran on when
    the CPU was its own, less when other processes took turns on its cores (a loaded machine)."""
    return cpu_seconds / wall_seconds if wall_seconds > 0 else float("nan")


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
    size timed together by ``timer``: ``{"latency": {NAME_bB_ms: median}, "latency_iqr":
    {NAME_bB_iqr: q3 - q1}, "cpu_share": {NAME_bB: CPU seconds per wall second}}``."""
    latency, spread, share = {}, {}, {}
    with torch_threads(threads), torch.no_grad():
        for batch in batch_sizes:
            images = torch.rand(batch, 3, size, size)
            runs = {f"{name}_b{batch}": functools.partial(runner, images) for name, runner in runners.items()}
            for name, stats in timer(runs, warmup, rounds).items():
                latency[f"{name}_ms"] = stats["median_ms"]
                spread[f"{name}_iqr"] = stats["iqr_ms"]
                share[name] = stats["cpu_share"]
    return {"latency": latency, "latency_iqr": spread, "cpu_share": share}


def eager_latency(models: dict[str, torch.nn.Module], size: int, batch_sizes: list[int], warmup: int,
                  rounds: int, threads: int, timer: Timer = measure_latencies) -> dict[str, dict[str, float]]:
    """``time_runners`` of fp32 eager CPU copies of the named models."""
    copies = {name: cpu_copy(model) for name, model in models.items()}
    return time_runners(copies, size, batch_sizes, warmup, rounds, threads, timer)
