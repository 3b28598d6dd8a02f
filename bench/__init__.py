"""Benchmarks of the llamaberry engine against the fake server, beside the raw groq SDK.

Run `uv run python -m bench` (or `--quick`); it writes bench/RESULTS.md and bench/scaling.png.
These are measurements, not tests: nothing here asserts, and CI does not run them.
"""
