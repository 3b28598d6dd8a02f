"""The report as a PNG chart, drawn with matplotlib (imported only when a chart is drawn)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llamaberry.core.results import Mode
from llamaberry.eval.results import HeadToHead, Report


def draw_chart(report: Report, path: Path) -> None:
    """Save a PNG: each mode's accuracy against the baseline's as a paired difference (on the
    items both answered, with its 95% paired interval and the test's verdict beside it); then
    accuracy after each turn beside the baseline, and for modes that draw answers side by side,
    one alone against the mode's answer and any right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    staged = list(dict.fromkeys(t.mode for t in report.stages))
    colours: dict[str, str] = {m: f"C{i}" for i, m in enumerate(report.modes)}  # every panel
    panels = 1 + bool(staged) + bool(report.samples)
    figure, axes_list = plt.subplots(1, panels, figsize=(6 * panels, 4.2), dpi=120, squeeze=False)
    _draw_differences(axes_list[0][0], report, colours)
    if staged:
        _draw_turns(axes_list[0][1], report, staged, colours)
    if report.samples:
        _draw_samples(axes_list[0][panels - 1], report, colours)
    figure.suptitle(f"{report.dataset} · {report.model}")
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def _draw_differences(axes: Any, report: Report, colours: dict[str, str]) -> None:
    """One row per mode: its accuracy minus the baseline's on the items both answered, in
    points, with the 95% paired interval, and the verdict (Holm-adjusted p) written beside."""
    from llamaberry.eval.report import against_baseline, baseline_mode

    base = baseline_mode(report.modes) if report.modes else "single"
    shown: list[tuple[Mode, HeadToHead]] = []
    for mode in report.modes:
        pair = against_baseline(report, mode) if mode != base else None
        if pair is not None and pair.items:
            shown.append((mode, pair))
    axes.axvline(0, color="grey", linestyle="--", linewidth=1)
    for y, (mode, h) in enumerate(shown):
        x = h.difference * 100
        axes.errorbar(
            [x],
            [y],
            xerr=[[max(0.0, x - h.low * 100)], [max(0.0, h.high * 100 - x)]],
            fmt="o",
            capsize=4,
            color=colours.get(mode),
        )
        verdict = (
            "better"
            if h.p_adjusted < 0.05 and h.a_only > h.b_only
            else ("worse" if h.p_adjusted < 0.05 else "no detectable difference")
        )
        p = f"p = {h.p_adjusted:.2g}" if h.p_adjusted >= 0.001 else "p < 0.001"
        axes.annotate(
            f"{x:+.1f} pts · {verdict} ({p})",
            (x, y),
            xytext=(0, 9),
            textcoords="offset points",
            ha="center",
            fontsize="small",
        )
    axes.set_yticks(range(len(shown)), [m for m, _ in shown])
    axes.set_ylim(max(len(shown), 1) - 0.3, -0.7)  # the first mode on top
    low = min([h.low * 100 for _, h in shown] + [-10.0])
    high = max([h.high * 100 for _, h in shown] + [10.0])
    axes.set_xlim(low - 5, high + 5)
    axes.set_xlabel(f"accuracy minus {base}'s, points (95% paired interval)")
    adjusted = ", Holm-adjusted p" if len(report.head_to_head) > 1 else ""
    axes.set_title(f"each mode against {base}, on the same items{adjusted}")
    axes.grid(alpha=0.3, axis="x")
    if not shown:
        axes.text(
            0.5, 0.5, f"no mode to compare with {base}", ha="center", transform=axes.transAxes
        )


def _draw_baseline(axes: Any, report: Report) -> None:
    """Single's accuracy as a dashed line over its 95% band, where single ran."""
    baseline = next((s for s in report.summaries if s.mode == "single"), None)
    if baseline is not None and baseline.accuracy is not None:
        axes.axhspan(baseline.low or 0.0, baseline.high or 0.0, color="grey", alpha=0.15)
        axes.axhline(
            baseline.accuracy, color="grey", linestyle="--", label="single (baseline, 95% band)"
        )


def _draw_samples(axes: Any, report: Report, colours: dict[str, str]) -> None:
    """Per mode that draws answers side by side: one answer alone, the mode's own answer and
    any answer right, each with its 95% interval over items, over the single baseline."""
    names = ["one answer alone", "the mode's answer", "any answer right"]
    _draw_baseline(axes, report)
    for offset, a in enumerate(report.samples):
        shift = (offset - (len(report.samples) - 1) / 2) * 0.12  # side by side, not on top
        figures = [
            (a.sample_accuracy, a.sample_low, a.sample_high),
            (a.accuracy, a.low, a.high),
            (a.any_accuracy, a.any_low, a.any_high),
        ]
        xs = [i + shift for i in range(len(names))]
        ys = [value for value, _, _ in figures]
        below = [max(0.0, value - low) for value, low, _ in figures]
        above = [max(0.0, high - value) for value, _, high in figures]
        # No value labels: side by side they would overlap; the report has the figures.
        axes.errorbar(
            xs, ys, yerr=[below, above], fmt="o", capsize=4, label=a.mode, color=colours[a.mode]
        )
    _finish_axes(axes, names, "each answer drawn against the mode's")


def _draw_turns(axes: Any, report: Report, staged: list[Mode], colours: dict[str, str]) -> None:
    """Accuracy after each stage of the modes that have stages, over the single baseline."""
    names: list[str] = []
    for t in report.stages:
        if t.stage not in names:
            names.append(t.stage)
    positions = {name: i for i, name in enumerate(names)}
    _draw_baseline(axes, report)
    for offset, mode in enumerate(staged):
        mine = [t for t in report.stages if t.mode == mode]
        shift = (offset - (len(staged) - 1) / 2) * 0.08  # side by side, not on top
        xs = [positions[t.stage] + shift for t in mine]
        ys = [t.accuracy for t in mine]
        below = [max(0.0, t.accuracy - t.low) for t in mine]
        above = [max(0.0, t.high - t.accuracy) for t in mine]
        axes.errorbar(
            xs, ys, yerr=[below, above], fmt="o-", capsize=4, label=mode, color=colours.get(mode)
        )
        for t, x in zip(mine, xs, strict=True):
            axes.annotate(
                f"{t.accuracy:.0%}", (x, t.accuracy), xytext=(6, -12), textcoords="offset points"
            )
    _finish_axes(axes, names, "accuracy after each turn")


def _finish_axes(axes: Any, names: list[str], title: str) -> None:
    """Stage names along x, accuracy 0-1 up y, the title, a light grid and the legend."""
    axes.set_xticks(range(len(names)), names)
    axes.set_xlim(-0.5, len(names) - 0.5)
    axes.set_ylim(-0.05, 1.05)
    axes.set_ylabel("accuracy (95% interval)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize="small")
