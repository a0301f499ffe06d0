"""The one timer of spn: a clock, a stopwatch for per-item timings, and a repeat-and-take-the-median
benchmark of a callable.

Every duration spn reports is read from :func:`clock`, PyTorch's benchmark timer
(``torch.utils.benchmark.timer``): ``time.perf_counter`` after synchronising the accelerator when
there is one, so GPU work is finished before the clock is read. ``torch.utils.benchmark.Timer``
itself is not used: it runs the statement with one thread unless told otherwise and has no notion
of the time budgets below.

- :class:`Stopwatch`: the durations of separate events, e.g. one model call per image of an
  evaluation; ``summary()`` gives ``{"median", "mean", "n"}`` in seconds.
- :func:`time_fn`: warm-up runs, then the median of repeated runs of ``fn()`` under a time budget
  (the operator and model benchmarks, the 512 x 512 timing of ``spn compare``).

Example:
    >>> from spn.utils.timer import Stopwatch, time_fn
    >>> t = time_fn("sum", lambda: sum(range(1000)), warmup=1, repeats=5)
    >>> t.repeats >= 5 and t.min_ms <= t.median_ms
    True
    >>> sw = Stopwatch()
    >>> for _ in range(3):
    ...     with sw.time():
    ...         _ = sum(range(1000))
    >>> sw.summary()["n"]
    3
"""
from __future__ import annotations

import statistics
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.benchmark import timer as clock

__all__ = ["Stopwatch", "Timing", "clock", "time_fn"]


@dataclass
class Timing:
    """The result of :func:`time_fn`: milliseconds per call (median, min, mean) over ``repeats`` runs."""

    name: str
    median_ms: float
    min_ms: float
    mean_ms: float
    repeats: int
    samples_ms: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class Stopwatch:
    """Durations (seconds) of separately timed events: ``with sw.time(): ...`` adds one sample."""

    def __init__(self):
        self.samples: list[float] = []

    @contextmanager
    def time(self):
        t0 = clock()
        try:
            yield
        finally:
            self.samples.append(clock() - t0)

    def summary(self) -> dict:
        """``{"median", "mean", "n"}`` of the samples (seconds); ValueError when there is none."""
        if not self.samples:
            raise ValueError("the stopwatch has no samples")
        return {"median": statistics.median(self.samples), "mean": statistics.fmean(self.samples),
                "n": len(self.samples)}


def time_fn(name: str, fn, *, warmup: int = 2, repeats: int = 10, min_time_s: float = 0.0,
            max_time_s: float = 60.0, seed: int | None = 0, min_repeats: int = 3) -> Timing:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    Repeats continue until both ``repeats`` runs and ``min_time_s`` seconds are reached, and
    stop early (with at least ``min_repeats`` samples) once ``max_time_s`` is spent.
    ``torch.manual_seed(seed)`` is called first, so random inputs made inside ``fn`` repeat
    (``seed=None`` leaves the global generator alone).
    """
    if repeats < 1 or min_repeats < 1 or warmup < 0:
        raise ValueError(f"time_fn: need repeats >= 1, min_repeats >= 1, warmup >= 0; got {repeats}, "
                         f"{min_repeats}, {warmup}")
    if seed is not None:
        torch.manual_seed(seed)
    for _ in range(warmup):
        fn()
    samples = []
    start = clock()
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        samples.append((t1 - t0) * 1e3)
        spent = t1 - start
        if len(samples) >= repeats and spent >= min_time_s:
            break
        if len(samples) >= min_repeats and spent >= max_time_s:
            break
    return Timing(name, statistics.median(samples), min(samples), statistics.fmean(samples), len(samples), samples)
