"""Micro-benchmarks (pytest-benchmark) of the hot kernels the methods' speed depends on.

Not part of the CPU test run (pytest's testpaths is tests/): run them with

    .venv/bin/python -m pytest benchmarks/micro --benchmark-autosave          # save a baseline in .benchmarks/
    .venv/bin/python -m pytest benchmarks/micro --benchmark-compare --benchmark-compare-fail=median:25%

The nightly workflow runs the second against the last good night's saved baseline.
"""
