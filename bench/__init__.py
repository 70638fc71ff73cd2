"""Benchmarks: each prints a table comparing the gateway with a baseline measured in the same run."""
