"""CPU latency of one forward pass: warm-up, then many timed rounds; median and IQR."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def measure_latency(run: Callable[[], object], warmup: int = 3, rounds: int = 20) -> dict[str, float]:
    """Milliseconds per call of ``run``: median, IQR (q3 - q1), min, and the round count."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
    return {"median_ms": statistics.median(times), "iqr_ms": q3 - q1, "min_ms": min(times), "rounds": len(times)}
