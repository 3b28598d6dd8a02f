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
from llamaberry.eval.stats import (
    holm,
    items_for_power,
    mcnemar,
    paired_difference,
    sample_figures,
    stage_figures,
    wilson,
)


def _p(value: float) -> str:
    return f"p = {value:.2g}" if value >= 0.001 else "p < 0.001"


def _verdict(h: HeadToHead, adjusted: bool, alpha: float = 0.05) -> str:
    """The pair's verdict in words, on the Holm-adjusted p when several pairs were tested."""
    p = _p(h.p_adjusted) + (", Holm-adjusted" if adjusted else "")
    if h.a_only + h.b_only == 0:
        return f"no difference: {h.a} and {h.b} got the same items right ({p})"
    if h.p_adjusted < alpha:
        better, worse = (h.a, h.b) if h.a_only > h.b_only else (h.b, h.a)
        return f"{better} is better than {worse} on this set ({p})"
    tail = ""
    if h.items_for_power is not None and h.items_for_power <= 1_000_000:
        tail = (
            f"; estimated from this sample, about {h.items_for_power:,} items in all would give "
            "an 80% chance of detecting a difference of this size"
        )
    return f"no detectable difference ({p}){tail}"


def _pairs(modes: Sequence[Mode], results: list[ItemResult]) -> list[HeadToHead]:
    """Every pair of modes on the items both answered: McNemar's p, Holm-adjusted over the
    pairs, the paired difference with its interval, and the verdict."""
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
        pair.difference, pair.low, pair.high = paired_difference(
            pair.items, pair.a_only, pair.b_only
        )
        pair.items_for_power = items_for_power(pair.items, pair.a_only, pair.b_only)
        pairs.append(pair)
    for pair, adjusted in zip(pairs, holm([p.p_value for p in pairs]), strict=True):
        pair.p_adjusted = adjusted
        pair.verdict = _verdict(pair, adjusted=len(pairs) > 1)
    return pairs


def _summary(mode: Mode, results: list[ItemResult]) -> ModeSummary:
    mine = [r for r in results if r.mode == mode]
    scored = [r for r in mine if r.correct is not None]
    right = sum(r.correct is True for r in scored)
    low, high = wilson(right, len(scored)) if scored else (None, None)
    costs = [r.cost for r in scored]
    known = bool(costs) and all(c is not None for c in costs)
    return ModeSummary(
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
        unreadable=sum(r.unreadable for r in scored),
        mean_cost=_mean([c for c in costs if c is not None]) if known else None,
        list_price=any(r.list_price for r in scored),
    )


def _gain(s: ModeSummary, base: Mode, results: list[ItemResult]) -> None:
    """Points per 1,000 extra tokens over `base`, on the items both finished, with the paired
    interval scaled alike (the extra tokens taken as fixed); left out when none were extra."""
    by = {(r.item, r.mode): r for r in results if r.correct is not None}
    both = [i for (i, m) in by if m == s.mode and (i, base) in by]
    if not both:
        return
    extra = sum(by[i, s.mode].tokens - by[i, base].tokens for i in both) / len(both)
    if extra <= 0:
        return
    mine = sum(by[i, s.mode].correct is True and by[i, base].correct is False for i in both)
    theirs = sum(by[i, base].correct is True and by[i, s.mode].correct is False for i in both)
    difference, low, high = paired_difference(len(both), mine, theirs)
    scale = 100 / (extra / 1000)
    s.gain_per_1k_tokens, s.gain_low, s.gain_high = difference * scale, low * scale, high * scale
    s.gain_items = len(both)


def baseline_mode(modes: Sequence[Mode]) -> Mode:
    """The mode the others are measured against: single where it ran, else the first."""
    return "single" if "single" in modes else modes[0]


def build_report(
    dataset: str, model: str, modes: Sequence[Mode], results: list[ItemResult]
) -> Report:
    """Summarize per-item results: accuracy over scored items, means over scored runs, every
    pair compared on the items both answered, and each mode's gain over the baseline."""
    summaries = [_summary(mode, results) for mode in modes]
    base = baseline_mode(modes) if modes else None
    for s in summaries:
        if base is not None and s.mode != base:
            _gain(s, base, results)
    stages, flips = stage_figures(modes, results)
    samples, confidence = sample_figures(modes, results)
    ordered = sorted(results, key=lambda r: (r.item, list(modes).index(r.mode)))
    return Report(
        dataset=dataset,
        model=model,
        modes=list(modes),
        results=ordered,
        summaries=summaries,
        head_to_head=_pairs(modes, results),
        stages=stages,
        flips=flips,
        samples=samples,
        confidence=confidence,
    )


def _mean(values: list[float] | list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def report_markdown(report: Report) -> str:
    """The report as Markdown: the bottom line, a table of each mode's figures, the pairwise
    differences, the per-stage figures, and last what produced it."""
    lines = _bottom_line(report) + _summary_table(report)
    for section in (
        _head_to_head_table,
        _stage_table,
        _flip_table,
        _sample_table,
        _confidence_table,
        _closing_notes,
        _reproduce,
    ):
        lines += section(report)
    return "\n".join(lines) + "\n"


def against_baseline(report: Report, mode: Mode) -> HeadToHead | None:
    """The pair of `mode` and the baseline, oriented so that a is `mode`."""
    base = baseline_mode(report.modes)
    for h in report.head_to_head:
        if (h.a, h.b) == (mode, base):
            return h
        if (h.a, h.b) == (base, mode):
            return h.model_copy(
                update={
                    "a": mode,
                    "b": base,
                    "a_only": h.b_only,
                    "b_only": h.a_only,
                    "difference": -h.difference,
                    "low": -h.high,
                    "high": -h.low,
                }
            )
    return None


def _bottom_line(report: Report) -> list[str]:
    """One paragraph: the best mode against the baseline, by how much (paired, with its
    interval), whether that is significant, and at what cost."""
    title = [f"## Eval: {report.dataset} · {report.model}", ""]
    ranked = [s for s in report.summaries if s.accuracy is not None]
    if not ranked:
        return [*title, "**Bottom line:** no run finished, so there is nothing to compare.", ""]
    base = baseline_mode(report.modes)
    best = max(ranked, key=lambda s: (s.accuracy or 0.0, s.mode == base))
    by_mode = {s.mode: s for s in report.summaries}
    if best.mode == base or len(ranked) == 1:
        others = [s.mode for s in ranked if s.mode != base]
        text = f"{base} scored {best.accuracy:.1%} ({best.correct} of {best.scored})"
        text += f"; no other mode ({', '.join(others)}) scored higher." if others else "."
        return [*title, f"**Bottom line:** {text}", ""]
    pair = against_baseline(report, best.mode)
    baseline = by_mode[base]
    text = f"{best.mode} scored {best.accuracy:.1%} against {base}'s {baseline.accuracy or 0:.1%}"
    if pair is not None:
        text += (
            f": {pair.difference * 100:+.1f} points on the {pair.items} items both answered "
            f"(95% paired interval {pair.low * 100:+.1f} to {pair.high * 100:+.1f}), "
            + ("significant" if pair.p_adjusted < 0.05 else "not significant")
            + f" ({_p(pair.p_adjusted)}"
            + (", Holm-adjusted)" if len(report.head_to_head) > 1 else ")")
        )
    if best.mean_tokens and baseline.mean_tokens:
        text += (
            f", at {best.mean_tokens / baseline.mean_tokens:.1f}× the tokens "
            f"({best.mean_tokens:,.0f} against {baseline.mean_tokens:,.0f} per item"
            f"; cost per item {best.cost} against {baseline.cost})"
        )
    return [*title, f"**Bottom line:** {text}.", ""]


def _summary_table(report: Report) -> list[str]:
    """One line per mode: accuracy, interval, unreadable replies, cost, failures, gain."""
    lines = [
        "| mode | accuracy | 95% interval | correct / scored | unreadable | mean tokens "
        "| cost per item | mean seconds | failures | points per 1k extra tokens (95%) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report.summaries:
        accuracy = f"{s.accuracy:.1%}" if s.accuracy is not None else "–"
        interval = f"{s.low:.1%} – {s.high:.1%}" if s.low is not None else "–"
        tokens = f"{s.mean_tokens:,.0f}" if s.mean_tokens is not None else "–"
        seconds = f"{s.mean_seconds:.2f}" if s.mean_seconds is not None else "–"
        gain = "–"
        if s.gain_per_1k_tokens is not None:
            gain = f"{s.gain_per_1k_tokens:+.1f} ({s.gain_low:+.1f} to {s.gain_high:+.1f})"
        lines.append(
            f"| {s.mode} | {accuracy} | {interval} | {s.correct} / {s.scored} | {s.unreadable} "
            f"| {tokens} | {s.cost} | {seconds} | {s.failures} | {gain} |"
        )
    base = baseline_mode(report.modes) if report.modes else "single"
    lines += [
        "",
        "Unreadable: finished runs whose reply held no answer the scorer could read; they count "
        "as wrong, but they say the reply's format failed, not the model's reasoning.",
    ]
    if any(s.gain_per_1k_tokens is not None for s in report.summaries):
        lines += [
            "",
            f"Points per 1k extra tokens: accuracy gained over {base}, in percentage points, for "
            f"every 1,000 tokens per item spent beyond {base}'s, on the items both finished; "
            "the interval is the paired difference's, scaled the same way (the extra tokens "
            "taken as fixed).",
        ]
    return lines


def _head_to_head_table(report: Report) -> list[str]:
    """Each pair of modes on the items both answered: the paired difference, McNemar's p
    (Holm-adjusted when more than one pair) and the verdict."""
    if not report.head_to_head:
        return []
    several = len(report.head_to_head) > 1
    lines = [
        "",
        "| modes | items both answered | right only in first | right only in second "
        "| difference (95% paired interval) | McNemar p"
        + (" | Holm-adjusted p" if several else "")
        + " | verdict |",
        "|---|---:|---:|---:|---:|---:|" + ("---:|" if several else "") + "---|",
    ]
    for h in report.head_to_head:
        held = f" | {h.p_adjusted:.3g}" if several else ""
        lines.append(
            f"| {h.a} vs {h.b} | {h.items} | {h.a_only} | {h.b_only} "
            f"| {h.difference * 100:+.1f} pts ({h.low * 100:+.1f} to {h.high * 100:+.1f}) "
            f"| {h.p_value:.3g}{held} | {h.verdict} |"
        )
    lines += [
        "",
        "Difference: the first mode's accuracy minus the second's on the items both answered, "
        "with the Bonett-Price interval for paired proportions. The items needed for an 80% "
        "chance of detecting a difference come from the normal approximation to McNemar's "
        "test for the pair alone at p < 0.05, taking this sample's split as the truth: an "
        "estimate, no more.",
    ]
    if several:
        lines += [
            "",
            f"With {len(report.head_to_head)} pairs tested, the p-values are adjusted by Holm's "
            "method, and the verdicts read the adjusted ones.",
        ]
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


def _reproduce(report: Report) -> list[str]:
    """What produced the report, setting by setting, for someone to run it again."""
    if not report.provenance:
        return []
    lines = ["", "### What produced this report", ""]
    lines += [f"- {name}: {value}" for name, value in report.provenance]
    return lines


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
