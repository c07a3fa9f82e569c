"""Benchmarks of tiered-session; run with ``python -m benchmarks`` (or ``tiered-session bench``)."""
