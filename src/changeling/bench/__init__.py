"""Benchmarks: named cases measured the same way every time (warm-up excluded, median over repeats), JSON
out, and a dated row per case appended to bench/RESULTS.md with the machine and the command."""
