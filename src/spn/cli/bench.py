"""``spn bench``: the propagation operator benchmark (same code as benchmarks/bench_propagation.py).

Its options are declared by :mod:`spn.benchmarking` itself (``add_arguments``), which
``benchmarks/bench_propagation.py`` shares."""
from __future__ import annotations

HELP = "benchmark the propagation operator: compiled kernel vs reference vs memory roofline"


def add_arguments(p) -> None:
    from spn.benchmarking import add_arguments as add

    add(p)


def run(args) -> int:
    from spn.benchmarking import run_cli

    return run_cli(args)
