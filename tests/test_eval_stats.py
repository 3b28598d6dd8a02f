"""Statistics that say no more than they know: the items an 80%-power test needs, Holm's
adjustment over several pairs, paired differences, gains on the items both modes finished,
unreadable replies counted apart, and a report that opens with its bottom line and ends with
what produced it."""

from __future__ import annotations

import math
import random

import pytest

from llamaberry.eval import ItemResult, build_report, mcnemar, report_markdown
from llamaberry.eval.stats import holm, items_for_power, paired_difference


def _result(item: int, mode: str, correct: bool | None, tokens: int = 100, **extra) -> ItemResult:
    return ItemResult(
        item=item,
        mode=mode,
        question=f"q{item}",
        gold="1",
        scorer="number",
        status="ok" if correct is not None else "failed",
        correct=correct,
        predicted="1" if correct else None,
        answer="x",
        error=None if correct is not None else "boom",
        tokens=tokens,
        seconds=1.0,
        run_id=None,
        reused=False,
        **extra,
    )


def test_items_for_80_percent_power_is_about_right_by_simulation():
    items, a_only, b_only = 100, 12, 4
    needed = items_for_power(items, a_only, b_only)
    assert needed is not None and needed > items
    # Draw many evals of `needed` items with this sample's shares as the truth: about 80% of
    # them reach p < 0.05 (the normal approximation, checked against the exact test).
    rng = random.Random(7)
    shares = (a_only / items, b_only / items)
    hits = 0
    trials = 400
    for _ in range(trials):
        a = b = 0
        for _ in range(needed):
            u = rng.random()
            a += u < shares[0]
            b += shares[0] <= u < shares[0] + shares[1]
        hits += mcnemar(a, b) < 0.05
    assert 0.72 <= hits / trials <= 0.88
    assert items_for_power(100, 5, 5) is None


def test_holm_adjusts_as_the_textbook_does():
    # Sorted 0.01, 0.03, 0.04 over three tests: 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04).
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2]) == [0.2]
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_the_paired_difference_has_the_bonett_price_interval():
    difference, low, high = paired_difference(50, 12, 2)
    assert difference == pytest.approx(0.2)
    p_a, p_b = 13 / 52, 3 / 52
    half = 1.96 * math.sqrt((p_a + p_b - (p_a - p_b) ** 2) / 52)
    assert (low, high) == pytest.approx((p_a - p_b - half, p_a - p_b + half))
    assert low > 0  # a split of 12 to 2 is a real difference


def _three_modes() -> list[ItemResult]:
    """vote right on 0-29, refine on 0-21, single on 0-19, of 40 items; refine's run on item 39
    failed; single's reply on item 38 held no answer."""
    results = []
    for i in range(40):
        results.append(_result(i, "single", i < 20, tokens=100, unreadable=i == 38))
        results.append(_result(i, "refine", None if i == 39 else i < 22, tokens=300))
        results.append(_result(i, "vote", i < 30, tokens=500))
    return results


def test_several_modes_are_judged_on_holm_adjusted_p_values():
    report = build_report("set", "model", ["single", "refine", "vote"], _three_modes())
    raw = [h.p_value for h in report.head_to_head]
    assert [h.p_adjusted for h in report.head_to_head] == pytest.approx(holm(raw))
    vote = next(h for h in report.head_to_head if (h.a, h.b) == ("single", "vote"))
    assert (vote.a_only, vote.b_only) == (0, 10)
    assert vote.verdict.startswith("vote is better than single")
    assert "Holm-adjusted" in vote.verdict
    refine = next(h for h in report.head_to_head if (h.a, h.b) == ("single", "refine"))
    assert refine.verdict.startswith("no detectable difference")
    assert (
        "80% chance of detecting" in refine.verdict
        and "estimated from this sample" in refine.verdict
    )
    markdown = report_markdown(report)
    assert "Holm-adjusted p" in markdown and "Holm's method" in markdown


def test_points_per_1k_tokens_use_the_items_both_modes_finished():
    report = build_report("set", "model", ["single", "refine", "vote"], _three_modes())
    refine = next(s for s in report.summaries if s.mode == "refine")
    # On items 0-38 (refine failed 39): refine right on 2 single missed, 200 tokens extra.
    assert refine.gain_items == 39
    assert refine.gain_per_1k_tokens == pytest.approx((2 / 39) * 100 / 0.2)
    assert refine.gain_low is not None and refine.gain_high is not None
    assert refine.gain_low < refine.gain_per_1k_tokens < refine.gain_high


def test_unreadable_replies_are_counted_apart():
    report = build_report("set", "model", ["single", "refine", "vote"], _three_modes())
    single = next(s for s in report.summaries if s.mode == "single")
    assert single.unreadable == 1
    line = next(x for x in report_markdown(report).splitlines() if x.startswith("| single |"))
    assert line.split(" | ")[4] == "1"


def test_the_report_opens_with_its_bottom_line_and_ends_with_what_produced_it():
    report = build_report("set", "model", ["single", "refine", "vote"], _three_modes())
    for s in report.summaries:
        s.cost = "unknown price"
    report.provenance = [("llamaberry", "9.9"), ("dataset sha256", "abc")]
    lines = report_markdown(report).splitlines()
    bottom = lines[2]
    assert bottom.startswith("**Bottom line:** vote scored 75.0% against single's 50.0%")
    assert "+25.0 points on the 40 items both answered" in bottom
    assert "significant (p = 0.0059, Holm-adjusted)" in bottom
    assert "5.0× the tokens" in bottom and "unknown price" in bottom
    assert lines[-3:] == ["", "- llamaberry: 9.9", "- dataset sha256: abc"]


def test_an_unreadable_reply_is_counted_apart_in_the_bar_the_report_and_the_file(
    fake_server, tmp_path
):
    import json

    from click.testing import CliRunner

    from llamaberry.cli import cli

    path = tmp_path / "two.jsonl"
    path.write_text(
        '{"question": "1 + 1?", "answer": "2"}\n{"question": "2 + 2?", "answer": "4"}\n'
    )
    fake_server.reply_with(lambda r: "I would rather not say." if "1 + 1" in r.user else "It is 4.")
    env = {"GROQ_API_KEY": "k", "GROQ_BASE_URL": fake_server.groq_base_url}
    env["LLAMABERRY_HISTORY"] = "0"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["eval", str(path), "--modes", "single", "-o", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    assert "unreadable 1" in result.stderr
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["correct"], r["unreadable"]) for r in rows] == [(False, True), (True, False)]
    line = next(
        x for x in (out / "report.md").read_text().splitlines() if x.startswith("| single |")
    )
    assert line.split(" | ")[3:5] == ["1 / 2", "1"]
