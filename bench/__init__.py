"""Benchmarks, run from the repository root as modules: `python -m bench.load`, `python -m bench.scaleout`, ...

Each script is a command line on top of `bench.harness` (see bench/README.md).
"""
