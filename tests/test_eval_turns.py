"""Eval that explains: per-turn accuracy and flips, McNemar, and what accuracy cost."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llamaberry import Engine
from llamaberry.eval import (
    draw_chart,
    evaluate,
    items_needed,
    load_dataset,
    mcnemar,
    report_markdown,
    write_results,
)
from llamaberry.testing import FakeServer, RecordedRequest, Reply

from .conftest import said, sums

ITEMS = 10
TURN_ONE_WRONG = {8, 9}  # turn 1 gets every other item right
BROKEN_BY_TURN_TWO = {0, 1, 2, 3}  # turn 2 talks itself out of these right answers
FIXED_BY_TURN_TWO = {8}
OTHER_WRONG_AT_TURN_TWO = {9}
SINGLE_RIGHT = {0, 1, 2, 3, 4, 5}


def _number(request: RecordedRequest) -> int:
    # The question is in the first user message; a later call's last one is its instruction.
    found = re.search(r"What is (\d+) \+", said(request))
    assert found, request.messages
    return int(found.group(1))


def turn_two_breaks_turn_one(request: RecordedRequest) -> Reply:
    """A refine run whose second turn undoes answers the first had right (and the synthesis
    follows turn 2); single is right on six items."""
    i = _number(request)
    right = 2 * i
    if not request.system:
        return Reply(f"It is {right if i in SINGLE_RIGHT else right + 5}.")
    asked = request.user or ""  # each refine call's own instruction comes last
    if "## Concise Answer" in asked or "## Critique" in asked:
        if i in BROKEN_BY_TURN_TWO:
            value = right + 1
        elif i in OTHER_WRONG_AT_TURN_TWO:
            value = right + 2
        else:
            value = right
        if "## Concise Answer" in asked:
            return Reply(f"## Analysis of Turns\nTurn 2 recounted.\n\n## Concise Answer\n{value}")
        return Reply(
            f"## Critique\nTurn 1 said {right}.\n\n## New Reasoning\n1. Recount.\n"
            f"**Explanation:** Step 2 of 3.\n\n## Updated Answer\n{value}"
        )
    value = right + 1 if i in TURN_ONE_WRONG else right
    return Reply(
        f"## Reasoning\n1. Add the numbers.\n**Explanation:** 1 + 1 is 2.\n\n## Answer\n{value}",
        usage={"prompt_tokens": 50, "completion_tokens": 50, "total_tokens": 100},
    )


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return sums(tmp_path / "sums.jsonl", ITEMS)


@pytest.fixture
async def report(server: FakeServer, dataset: Path):
    server.reply_with(turn_two_breaks_turn_one)
    async with Engine(api_key="k", base_url=server.groq_base_url, turns=2, history=False) as engine:
        return await evaluate(engine, load_dataset(dataset), ("single", "refine"))


async def test_each_turn_and_the_synthesis_is_scored_without_an_extra_call(
    server: FakeServer, report
):
    assert len(server.requests) == ITEMS * 1 + ITEMS * 3  # single; two turns and a synthesis
    refine = [r for r in report.results if r.mode == "refine"]
    assert [s.stage for s in refine[0].stages] == ["turn 1", "turn 2", "synthesis"]
    turn_one = {r.item for r in refine if r.stages[0].correct}
    assert turn_one == set(range(ITEMS)) - TURN_ONE_WRONG
    accuracy = {(t.mode, t.stage): (t.correct, t.scored) for t in report.stages}
    assert accuracy == {
        ("refine", "turn 1"): (8, 10),
        ("refine", "turn 2"): (5, 10),
        ("refine", "synthesis"): (5, 10),
    }


async def test_flips_between_turns_are_counted_with_their_items(report):
    first, second = report.flips
    assert (first.before, first.after) == ("turn 1", "turn 2")
    assert first.right_to_wrong == sorted(BROKEN_BY_TURN_TWO)
    assert first.wrong_to_right == sorted(FIXED_BY_TURN_TWO)
    assert first.wrong_to_other_wrong == sorted(OTHER_WRONG_AT_TURN_TWO)
    assert (second.right_to_wrong, second.wrong_to_right, second.wrong_to_other_wrong) == (
        [],
        [],
        [],
    )
    markdown = report_markdown(report)
    assert "| refine | turn 1 → turn 2 | 4: items 0, 1, 2, 3 | 1: items 8 | 1: items 9 |" in (
        markdown
    )
    assert "| refine | turn 2 | 50.0% |" in markdown


async def test_per_turn_figures_are_recomputed_from_results_jsonl(report, tmp_path: Path):
    path = tmp_path / "results.jsonl"
    write_results(report, path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    refine = [row for row in rows if row["mode"] == "refine" and row["correct"] is not None]
    for summary in report.stages:
        marks = [
            s["correct"] for row in refine for s in row["stages"] if s["stage"] == summary.stage
        ]
        assert (sum(marks), len(marks)) == (summary.correct, summary.scored)
    for flips in report.flips:
        kinds: dict[str, list[int]] = {"rw": [], "wr": [], "ww": []}
        for row in refine:
            by = {s["stage"]: s for s in row["stages"]}
            x, y = by[flips.before], by[flips.after]
            if x["correct"] and not y["correct"]:
                kinds["rw"].append(row["item"])
            elif not x["correct"] and y["correct"]:
                kinds["wr"].append(row["item"])
            elif not x["correct"] and x["predicted"] != y["predicted"]:
                kinds["ww"].append(row["item"])
        assert kinds == {
            "rw": flips.right_to_wrong,
            "wr": flips.wrong_to_right,
            "ww": flips.wrong_to_other_wrong,
        }


async def test_the_chart_shows_accuracy_by_turn_beside_the_baseline(report, tmp_path: Path):
    path = tmp_path / "chart.png"
    draw_chart(report, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    assert width > height * 2  # two panels side by side: by turn, and by cost


def test_mcnemar_matches_the_hand_computation():
    # 10 discordant pairs split 9 to 1: 2 * (C(10,0) + C(10,1)) / 2**10 = 22 / 1024.
    assert mcnemar(9, 1) == pytest.approx(22 / 1024)
    assert round(mcnemar(9, 1), 3) == 0.021
    assert mcnemar(1, 9) == mcnemar(9, 1)
    assert mcnemar(0, 0) == 1.0 and mcnemar(5, 5) == 1.0
    # 7 to 3: 2 * (1 + 10 + 45 + 120) / 1024.
    assert mcnemar(7, 3) == pytest.approx(352 / 1024)


def test_items_needed_grows_until_the_same_split_would_be_significant():
    more = items_needed(40, 7, 3)
    assert more is not None
    total = 40 + more
    scaled = (round(7 * total / 40), round(3 * total / 40))
    assert mcnemar(*scaled) < 0.05
    assert items_needed(40, 5, 5) is None


async def test_the_report_gives_a_verdict_and_the_cost_of_accuracy(report):
    [pair] = report.head_to_head
    # single right on 0-5; refine's synthesis right on 4-8: single only 0-3, refine only 6-8.
    assert (pair.a_only, pair.b_only) == (4, 3)
    assert pair.p_value == pytest.approx(mcnemar(4, 3))
    assert pair.verdict.startswith("no detectable difference (p = 1)")
    markdown = report_markdown(report)
    assert "| single vs refine | 10 | 4 | 3 | +10.0 pts (" in markdown
    assert "| 1 | no detectable difference" in markdown
    single, refine = report.summaries
    assert refine.gain_per_1k_tokens is not None
    # Every item finished in both modes, so the items both finished are all of them.
    extra = refine.mean_tokens - single.mean_tokens
    expected = (refine.accuracy - single.accuracy) * 100 / (extra / 1000)
    assert refine.gain_per_1k_tokens == pytest.approx(expected)
    assert refine.gain_low < refine.gain_per_1k_tokens < refine.gain_high
    assert "points per 1k extra tokens" in markdown
