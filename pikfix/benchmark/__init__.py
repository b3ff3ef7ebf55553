"""Benchmark room: bench data, the runner, classical baselines, reports and speed cases."""
