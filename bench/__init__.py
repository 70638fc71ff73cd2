"""Benchmarks (`python -m bench`): every figure next to a baseline measured in the same run, in one table."""
