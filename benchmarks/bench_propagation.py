"""Propagation operator benchmark (`make bench`, `spn bench`).

    python benchmarks/bench_propagation.py [--sizes S1,S2,S3] [--no-reference] [--json PATH]

The suite itself is :mod:`spn.benchmarking` so that the installed `spn bench` runs the same code.
"""
import sys

from spn.benchmarking import main

if __name__ == "__main__":
    sys.exit(main())
