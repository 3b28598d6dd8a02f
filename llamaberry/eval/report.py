"""The report: per-mode summaries and head-to-head tests built from the item results, as
Markdown and as JSONL."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

from llamaberry.core.redact import redact_model
from llamaberry.core.results import Mode, ModeResult
from llamaberry.eval.results import (
    ConfidenceBucket,
    HeadToHead,
    ItemResult,
    ModeSummary,
    Report,
)
from llamaberry.eval.stats import items_needed, mcnemar, sample_figures, stage_figures, wilson


def _verdict(h: HeadToHead, alpha: float = 0.05) -> str:
    p = f"p = {h.p_value:.2g}" if h.p_value >= 0.001 else "p < 0.001"
    if h.a_only + h.b_only == 0:
        return f"no difference: {h.a} and {h.b} got the same items right ({p})"
    if h.p_value < alpha:
        better, worse = (h.a, h.b) if h.a_only > h.b_only else (h.b, h.a)
        return f"{better} is better than {worse} on this set ({p})"
    more = items_needed(h.items, h.a_only, h.b_only, alpha)
    tail = (
        f"; about {more:,} more items would be needed to see a difference of this size"
        if more is not None
        else ""
    )
    return f"no detectable difference ({p}){tail}"


def build_report(
    dataset: str, model: str, modes: Sequence[Mode], results: list[ItemResult]
) -> Report:
    """Summarize per-item results: accuracy over scored items, means over scored runs."""
    summaries = []
    for mode in modes:
        mine = [r for r in results if r.mode == mode]
        scored = [r for r in mine if r.correct is not None]
        right = sum(r.correct is True for r in scored)
        low, high = wilson(right, len(scored)) if scored else (None, None)
        summaries.append(
            ModeSummary(
                mode=mode,
                items=len(mine),
                scored=len(scored),
                correct=right,
                accuracy=right / len(scored) if scored else None,
                low=low,
                high=high,
                mean_tokens=_mean([r.tokens for r in scored]),
                mean_seconds=_mean([r.seconds for r in scored]),
                failures=len(mine) - len(scored),
                reused=sum(r.reused for r in mine),
            )
        )
    baseline = next((s for s in summaries if s.mode == "single"), None)
    for s in summaries:
        if baseline is None or s is baseline or s.accuracy is None or baseline.accuracy is None:
            continue
        extra = (s.mean_tokens or 0) - (baseline.mean_tokens or 0)
        if extra > 0:
            s.gain_per_1k_tokens = (s.accuracy - baseline.accuracy) * 100 / (extra / 1000)
    verdicts = {(r.item, r.mode): r.correct for r in results if r.correct is not None}
    pairs = []
    for a, b in combinations(modes, 2):
        both = [i for (i, m) in verdicts if m == a and (i, b) in verdicts]
        pair = HeadToHead(
            a=a,
            b=b,
            items=len(both),
            a_only=sum(verdicts[i, a] and not verdicts[i, b] for i in both),
            b_only=sum(verdicts[i, b] and not verdicts[i, a] for i in both),
        )
        pair.p_value = mcnemar(pair.a_only, pair.b_only)
        pair.verdict = _verdict(pair)
        pairs.append(pair)
    stages, flips = stage_figures(modes, results)
    samples, confidence = sample_figures(modes, results)
    ordered = sorted(results, key=lambda r: (r.item, list(modes).index(r.mode)))
    return Report(
        dataset=dataset,
        model=model,
        modes=list(modes),
        results=ordered,
        summaries=summaries,
        head_to_head=pairs,
        stages=stages,
        flips=flips,
        samples=samples,
        confidence=confidence,
    )


def _mean(values: list[float] | list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def report_markdown(report: Report) -> str:
    """The report as Markdown: a table per mode's figures, then the pairwise differences."""
    lines = _summary_table(report)
    for section in (
        _head_to_head_table,
        _stage_table,
        _flip_table,
        _sample_table,
        _confidence_table,
        _closing_notes,
    ):
        lines += section(report)
    return "\n".join(lines) + "\n"


def _summary_table(report: Report) -> list[str]:
    """The title and one line per mode: accuracy, interval, cost, failures, gain over single."""
    lines = [
        f"## Eval: {report.dataset} · {report.model}",
        "",
        "| mode | accuracy | 95% interval | correct / scored | mean tokens | mean seconds "
        "| failures | points per 1k extra tokens |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report.summaries:
        accuracy = f"{s.accuracy:.1%}" if s.accuracy is not None else "–"
        interval = f"{s.low:.1%} – {s.high:.1%}" if s.low is not None else "–"
        tokens = f"{s.mean_tokens:,.0f}" if s.mean_tokens is not None else "–"
        seconds = f"{s.mean_seconds:.2f}" if s.mean_seconds is not None else "–"
        gain = f"{s.gain_per_1k_tokens:+.1f}" if s.gain_per_1k_tokens is not None else "–"
        lines.append(
            f"| {s.mode} | {accuracy} | {interval} | {s.correct} / {s.scored} | {tokens} "
            f"| {seconds} | {s.failures} | {gain} |"
        )
    if any(s.gain_per_1k_tokens is not None for s in report.summaries):
        lines += [
            "",
            "Points per 1k extra tokens: accuracy gained over single, in percentage points, for "
            "every 1,000 tokens per item spent beyond single's.",
        ]
    return lines


def _head_to_head_table(report: Report) -> list[str]:
    """Each pair of modes on the items both answered, with McNemar's p and its verdict."""
    if not report.head_to_head:
        return []
    lines = [
        "",
        "| modes | items both answered | right only in first | right only in second "
        "| McNemar p | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for h in report.head_to_head:
        lines.append(
            f"| {h.a} vs {h.b} | {h.items} | {h.a_only} | {h.b_only} | {h.p_value:.3g} "
            f"| {h.verdict} |"
        )
    return lines


def _stage_table(report: Report) -> list[str]:
    """Accuracy after each turn of the modes that have turns."""
    if not report.stages:
        return []
    lines = [
        "",
        "### Accuracy after each turn",
        "",
        "| mode | stage | accuracy | 95% interval | correct / scored |",
        "|---|---|---:|---:|---:|",
    ]
    for t in report.stages:
        lines.append(
            f"| {t.mode} | {t.stage} | {t.accuracy:.1%} | {t.low:.1%} – {t.high:.1%} "
            f"| {t.correct} / {t.scored} |"
        )
    return lines


def _flip_table(report: Report) -> list[str]:
    """How answers changed between consecutive turns, with the items of each kind."""
    if not report.flips:
        return []
    lines = [
        "",
        "### How answers changed between turns",
        "",
        "| mode | from → to | right → wrong | wrong → right | wrong → another wrong |",
        "|---|---|---|---|---|",
    ]
    for f in report.flips:
        lines.append(
            f"| {f.mode} | {f.before} → {f.after} | {_ids(f.right_to_wrong)} "
            f"| {_ids(f.wrong_to_right)} | {_ids(f.wrong_to_other_wrong)} |"
        )
    lines += ["", "Items are numbered from 0 in dataset order (the `item` of results.jsonl)."]
    return lines


def _sample_table(report: Report) -> list[str]:
    """The side-by-side answers alone, any of them right, and the mode's own answer."""
    if not report.samples:
        return []
    lines = [
        "",
        "### Each answer drawn on its own",
        "",
        "| mode | answers per item | one answer alone | 95% interval | any answer right "
        "| 95% interval | the mode's answer | 95% interval |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a in report.samples:
        lines.append(
            f"| {a.mode} | {a.answers / a.items:.3g} | {a.sample_accuracy:.1%} "
            f"| {a.sample_low:.1%} – {a.sample_high:.1%} | {a.any_accuracy:.1%} "
            f"| {a.any_low:.1%} – {a.any_high:.1%} | {a.accuracy:.1%} "
            f"| {a.low:.1%} – {a.high:.1%} |"
        )
    lines += [
        "",
        "One answer alone: the share of a mode's side-by-side answers (the ones it drew "
        "independently, at once) that were right, averaged over items. Any answer right: "
        "items where at least one was (what a perfect picker would get). The mode's answer: "
        "the one it settled on from them. Intervals are over items, since the answers to one "
        "question are not independent.",
    ]
    return lines


def _confidence_table(report: Report) -> list[str]:
    """Accuracy by the mode's own confidence, in a table and in words."""
    if not report.confidence:
        return []
    lines = [
        "",
        "### Right answers by the mode's own confidence",
        "",
        "| mode | confidence | items | mean confidence | right | accuracy | 95% interval |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for b in report.confidence:
        lines.append(
            f"| {b.mode} | {b.bucket} | {b.items} | {b.mean_confidence:.0%} | {b.correct} "
            f"| {b.accuracy:.1%} | {b.low:.1%} – {b.high:.1%} |"
        )
    lines += [
        "",
        *_confidence_lines(report.confidence),
        "",
        "A mode's confidence is its own: "
        + "; ".join(
            f"{mode}'s is {ModeResult.type_for(mode).confidence_means}"
            for mode in dict.fromkeys(b.mode for b in report.confidence)
        )
        + ". A confidence worth reading is right more often where it is higher.",
    ]
    return lines


def _closing_notes(report: Report) -> list[str]:
    """What the reader must know: failed runs, an early stop, the eval's warnings."""
    lines: list[str] = []
    if any(s.failures for s in report.summaries):
        lines += ["", "Failed runs are not scored; rerun the same command to retry them."]
    if report.batch:
        lines += ["", report.batch]
    if report.stopped:
        lines += ["", f"**Stopped early.** {report.stopped}."]
    for warning in report.warnings:
        lines += ["", f"Note: {warning}"]
    return lines


def _confidence_lines(buckets: list[ConfidenceBucket], high: float = 0.8) -> list[str]:
    """Per mode, in words: how often its answer was right when it was sure and when it was not
    (vote's confidence is its agreement: the winner's share of the readable samples)."""
    lines = []
    for mode in dict.fromkeys(b.mode for b in buckets):
        mine = [b for b in buckets if b.mode == mode]
        parts = []
        for where, group in (
            (f"where its confidence was at least {high:.0%}", [b for b in mine if _sure(b, high)]),
            (f"where it was below {high:.0%}", [b for b in mine if not _sure(b, high)]),
        ):
            items, right = sum(b.items for b in group), sum(b.correct for b in group)
            if items:
                parts.append(f"{right} of {items} items ({right / items:.0%}) {where}")
        lines.append(f"{mode}: right on {', and on '.join(parts)}.")
    return lines


def _sure(bucket: ConfidenceBucket, high: float) -> bool:
    # Bands never straddle `high` (it is a band's edge), so the band's mean tells its side.
    return bucket.mean_confidence >= high - 1e-9


def _ids(items: list[int], shown: int = 12) -> str:
    """'3: items 1, 4, 9' (the first few ids, then how many more)."""
    if not items:
        return "0"
    listed = ", ".join(str(i) for i in items[:shown])
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return f"{len(items)}: items {listed}{more}"


def write_results(report: Report, path: Path) -> None:
    """Write the per-item results as JSONL, one line per (item, mode)."""
    with path.open("w", encoding="utf-8") as out:
        for result in report.results:
            out.write(redact_model(result).model_dump_json() + "\n")
