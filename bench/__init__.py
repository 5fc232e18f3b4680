"""Benchmarks: ``python -m bench [NAME ...]`` (``make bench``). Figures are ratios to a
baseline measured in the same run, never absolute targets in tests."""
