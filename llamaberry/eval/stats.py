"""The statistics of an eval: Wilson intervals, the exact McNemar test, how many items a
difference would need, and the per-stage and side-by-side figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

from llamaberry.core.results import Mode
from llamaberry.eval.results import (
    ConfidenceBucket,
    Flips,
    ItemResult,
    SampleSummary,
    StageSummary,
)


def wilson(correct: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95% by default); `correct` may be a mean
    share times n (a fraction of an item)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar(a_only: int, b_only: int) -> float:
    """The exact two-sided McNemar p-value: how likely a split of the discordant pairs at least
    this uneven is when neither mode is better (a binomial test with p = 1/2)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1)) / 2**n
    return min(1.0, 2 * tail)


def items_for_power(
    items: int, a_only: int, b_only: int, power: float = 0.8, alpha: float = 0.05
) -> int | None:
    """About how many items in all a paired comparison needs to detect a difference of the size
    seen here with probability `power` (two-sided McNemar test at `alpha`), by the normal
    approximation for paired proportions (Connor, 1987), taking this sample's discordant shares
    as the truth: an estimate from this sample, no more. None when the split is even."""
    if items == 0 or a_only == b_only:
        return None
    from statistics import NormalDist

    discordant = (a_only + b_only) / items
    difference = (a_only - b_only) / items
    z_alpha = NormalDist().inv_cdf(1 - alpha / 2)
    z_power = NormalDist().inv_cdf(power)
    root = z_alpha * math.sqrt(discordant) + z_power * math.sqrt(discordant - difference**2)
    return math.ceil(root**2 / difference**2)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of several p-values tested together (each comparison's p
    made larger so that the chance of any false "better" stays at the level asked)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def paired_difference(
    items: int, a_only: int, b_only: int, z: float = 1.96
) -> tuple[float, float, float]:
    """The difference in accuracy of two modes on the same items (a's minus b's), with the
    Bonett-Price adjusted Wald interval for paired proportions (95% by default)."""
    if items == 0:
        return 0.0, -1.0, 1.0
    difference = (a_only - b_only) / items
    p_a, p_b = (a_only + 1) / (items + 2), (b_only + 1) / (items + 2)
    half = z * math.sqrt(max(0.0, p_a + p_b - (p_a - p_b) ** 2) / (items + 2))
    centre = p_a - p_b
    return difference, max(-1.0, centre - half), min(1.0, centre + half)


def items_needed(items: int, a_only: int, b_only: int, alpha: float = 0.05) -> int | None:
    """About how many more items, answered like these, would make the difference significant:
    the discordant counts are scaled up in proportion until the test says p < alpha. None when
    there is no difference to scale (equal split) or it would take more than a million."""
    if a_only == b_only or items == 0:
        return None
    total = items
    while total <= 1_000_000:
        total = max(total + 1, int(total * 1.1))
        factor = total / items
        if mcnemar(round(a_only * factor), round(b_only * factor)) < alpha:
            return total - items
    return None


def stage_figures(
    modes: Sequence[Mode], results: list[ItemResult]
) -> tuple[list[StageSummary], list[Flips]]:
    """Accuracy after each stage, and the flips between consecutive stages, per mode."""
    summaries: list[StageSummary] = []
    flips: list[Flips] = []
    for mode in modes:
        mine = [r for r in results if r.mode == mode and r.correct is not None and r.stages]
        names: list[str] = []
        for r in mine:
            names += [s.stage for s in r.stages if s.stage not in names]
        if len(names) < 2:
            continue  # one answer per run: the mode's own line says it all
        for name in names:
            marks = [s.correct for r in mine for s in r.stages if s.stage == name]
            right = sum(marks)
            low, high = wilson(right, len(marks))
            summaries.append(
                StageSummary(
                    mode=mode,
                    stage=name,
                    scored=len(marks),
                    correct=right,
                    accuracy=right / len(marks) if marks else 0.0,
                    low=low,
                    high=high,
                )
            )
        for before, after in pairwise(names):
            change = Flips(
                mode=mode,
                before=before,
                after=after,
                right_to_wrong=[],
                wrong_to_right=[],
                wrong_to_other_wrong=[],
            )
            for r in mine:
                by = {s.stage: s for s in r.stages}
                x, y = by.get(before), by.get(after)
                if x is None or y is None:
                    continue
                if x.correct and not y.correct:
                    change.right_to_wrong.append(r.item)
                elif not x.correct and y.correct:
                    change.wrong_to_right.append(r.item)
                elif not x.correct and not y.correct and _differ(x.predicted, y.predicted):
                    change.wrong_to_other_wrong.append(r.item)
            flips.append(change)
    return summaries, flips


# Bands of a mode's own confidence, highest first: (lowest value in the band, its name).
CONFIDENCE_BANDS = ((1.0, "100%"), (0.8, "80–99%"), (0.6, "60–79%"), (0.0, "below 60%"))


def confidence_band(value: float) -> str:
    """The name of the band a confidence falls in ("80–99%")."""
    # A hair of slack: 4/5 must land in 80–99% however the division rounded.
    return next(name for low, name in CONFIDENCE_BANDS if value >= low - 1e-9)


def sample_figures(
    modes: Sequence[Mode], results: list[ItemResult]
) -> tuple[list[SampleSummary], list[ConfidenceBucket]]:
    """Per mode: its side-by-side answers alone against its own answer, and its accuracy by
    its own confidence."""
    summaries: list[SampleSummary] = []
    buckets: list[ConfidenceBucket] = []
    for mode in modes:
        scored = [r for r in results if r.mode == mode and r.correct is not None]
        drawn = [r for r in scored if r.samples and r.sample_accuracy is not None]
        if drawn:
            n = len(drawn)
            share = sum(r.sample_accuracy or 0.0 for r in drawn) / n
            any_right = sum(any(s.correct for s in r.samples) for r in drawn)
            right = sum(r.correct is True for r in drawn)
            summaries.append(
                SampleSummary(
                    mode=mode,
                    items=n,
                    answers=sum(len(r.samples) for r in drawn),
                    sample_accuracy=share,
                    sample_low=wilson(share * n, n)[0],
                    sample_high=wilson(share * n, n)[1],
                    any_right=any_right,
                    any_accuracy=any_right / n,
                    any_low=wilson(any_right, n)[0],
                    any_high=wilson(any_right, n)[1],
                    correct=right,
                    accuracy=right / n,
                    low=wilson(right, n)[0],
                    high=wilson(right, n)[1],
                )
            )
        for _, band in CONFIDENCE_BANDS:
            inside = [
                r
                for r in scored
                if r.confidence is not None and confidence_band(r.confidence) == band
            ]
            if not inside:
                continue
            right = sum(r.correct is True for r in inside)
            low, high = wilson(right, len(inside))
            buckets.append(
                ConfidenceBucket(
                    mode=mode,
                    bucket=band,
                    items=len(inside),
                    mean_confidence=sum(r.confidence or 0.0 for r in inside) / len(inside),
                    correct=right,
                    accuracy=right / len(inside),
                    low=low,
                    high=high,
                )
            )
    return summaries, buckets


def _differ(a: str | None, b: str | None) -> bool:
    from llamaberry.core.scoring import normalize

    return normalize(a or "") != normalize(b or "")
