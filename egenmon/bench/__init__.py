"""Benchmarks: `egenmon bench NAME --json`."""
