"""Benchmarks on the local stack: `sendrail bench`."""
