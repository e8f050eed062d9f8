"""Benchmarks: what methods, solvers and the engine cost, measured against a baseline in the same run."""
