"""Small summaries of timing samples."""

from __future__ import annotations

import statistics


def quantile(values: list[float], q: float) -> float:
    """The sample at quantile `q` (nearest rank), e.g. 0.9 for the 90th percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary_ms(values: list[float]) -> dict[str, float]:
    """Median, 10th and 90th percentile of samples given in seconds, as milliseconds."""
    ms = [v * 1000 for v in values]
    return {
        "median_ms": statistics.median(ms),
        "p10_ms": quantile(ms, 0.1),
        "p90_ms": quantile(ms, 0.9),
    }
