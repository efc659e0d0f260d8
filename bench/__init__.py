"""Benchmarks of issue 8 (not timed tests): `python -m bench`. See bench/RESULTS.md."""
