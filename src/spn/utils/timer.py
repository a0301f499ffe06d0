"""The one benchmark timer: fixed seeds, warm-up, medians, JSON-able results."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class Timing:
    name: str
    median_ms: float
    min_ms: float
    mean_ms: float
    repeats: int
    samples_ms: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def time_fn(name: str, fn, *, warmup: int = 2, repeats: int = 10, min_time_s: float = 0.0,
            max_time_s: float = 60.0, seed: int = 0) -> Timing:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    Repeats continue until both ``repeats`` runs and ``min_time_s`` seconds are reached, and
    stop early (with at least 3 samples) once ``max_time_s`` is spent.
    """
    torch.manual_seed(seed)
    for _ in range(warmup):
        fn()
    samples = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        spent = time.perf_counter() - start
        if len(samples) >= repeats and spent >= min_time_s:
            break
        if len(samples) >= 3 and spent >= max_time_s:
            break
    return Timing(name, statistics.median(samples), min(samples), statistics.fmean(samples), len(samples), samples)
