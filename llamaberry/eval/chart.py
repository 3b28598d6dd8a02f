"""The report as a PNG chart, drawn with matplotlib (imported only when a chart is drawn)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llamaberry.core.results import Mode
from llamaberry.eval.results import Report


def draw_chart(report: Report, path: Path) -> None:
    """Save a PNG: accuracy after each turn (95% intervals) beside the single baseline; for
    modes that draw answers side by side, one alone against the mode's answer and any right;
    and accuracy against mean tokens, one point per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    staged = list(dict.fromkeys(t.mode for t in report.stages))
    colours: dict[str, str] = {m: f"C{i}" for i, m in enumerate(report.modes)}  # every panel
    panels = 1 + bool(staged) + bool(report.samples)
    figure, axes_list = plt.subplots(1, panels, figsize=(6 * panels, 4.2), dpi=120, squeeze=False)
    if staged:
        _draw_turns(axes_list[0][0], report, staged, colours)
    if report.samples:
        _draw_samples(axes_list[0][panels - 2], report, colours)
    axes = axes_list[0][-1]
    for s in report.summaries:
        if s.accuracy is None or s.mean_tokens is None:
            continue
        # Clamped: at 0% or 100% rounding can put the interval's edge a hair inside the point.
        below = max(0.0, s.accuracy - (s.low or 0.0))
        above = max(0.0, (s.high or 0.0) - s.accuracy)
        axes.errorbar(
            [s.mean_tokens],
            [s.accuracy],
            yerr=[[below], [above]],
            fmt="o",
            capsize=4,
            color=colours.get(s.mode),
        )
        axes.annotate(
            s.mode, (s.mean_tokens, s.accuracy), xytext=(6, 6), textcoords="offset points"
        )
    axes.set_xlabel("mean tokens per item")
    axes.set_ylabel("accuracy (95% interval)")
    axes.set_ylim(-0.05, 1.05)
    axes.set_title("accuracy and what it cost")
    axes.grid(alpha=0.3)
    figure.suptitle(f"{report.dataset} · {report.model}")
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


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
