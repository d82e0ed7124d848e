"""Benchmarks of voucher-distributor: `make bench` (python -m bench) prints a table of ratios.

Every figure is a ratio against a baseline measured in the same run on the same machine, so the
numbers mean the same thing on a fast laptop and on a noisy 2-core CI runner. See BENCHMARKS.md.
"""
