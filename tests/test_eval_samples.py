"""Eval scores every answer a mode drew side by side (vote's samples, drafts' drafts), not only
the one it settled on, and checks vote's agreement against how often its majority was right."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from llamaberry import Engine
from llamaberry.eval import (
    confidence_band,
    draw_chart,
    evaluate,
    load_dataset,
    report_markdown,
    wilson,
    write_results,
)
from llamaberry.testing import FakeServer, RecordedRequest, Reply

from .conftest import sums

ITEMS = 10
# Per item, the five samples' answers as offsets from the right sum (0 = right): the k-th
# sample of an item to arrive gets the k-th offset, so counts (not which sample) are fixed.
VOTES = {
    0: [0, 0, 0, 0, 0],
    1: [0, 0, 0, 0, 0],
    2: [0, 0, 0, 0, 0],
    3: [0, 0, 0, 0, 0],
    4: [0, 0, 0, 0, 0],
    5: [0, 0, 0, 0, 1],  # 4 of 5 agree, right
    6: [0, 1, 0, 0, 0],  # 4 of 5 agree, right
    7: [0, 1, 0, 1, 0],  # 3 of 5 agree, right
    8: [0, 1, 1, 0, 1],  # 3 of 5 agree on a wrong answer
    9: [0, 1, 1, 2, 3],  # 2 of 5 agree on a wrong answer; one sample was right
}
# Drafts: items 0-5 have all three drafts right, 6-9 only the first to arrive; the synthesis
# is right on 0-7.
ALL_DRAFTS_RIGHT = set(range(6))
SYNTHESIS_RIGHT = set(range(8))
SINGLE_RIGHT = {0, 1, 2, 3, 4, 5}


def _number(request: RecordedRequest) -> int:
    found = re.search(r"What is (\d+) \+", request.user or "")
    assert found, request.user
    return int(found.group(1))


def scripted():
    """single, vote's samples, drafts' drafts and their synthesis, each by its system prompt."""
    arrivals: Counter[tuple[str, int]] = Counter()

    def handler(request: RecordedRequest) -> Reply:
        system = request.system or ""
        if "<draft" in (request.user or ""):
            i = _number(request)
            value = 2 * i + (0 if i in SYNTHESIS_RIGHT else 7)
            return Reply(f"## Analysis of Drafts\nThey differ.\n\n## Concise Answer\n{value}")
        i = _number(request)
        if not system:
            return Reply(f"It is {2 * i if i in SINGLE_RIGHT else 2 * i + 5}.")
        kind = "sample" if "Answer: <your final answer>" in system else "draft"
        arrivals[kind, i] += 1
        k = arrivals[kind, i] - 1
        if kind == "sample":
            return Reply(f"Adding them up.\n\nAnswer: {2 * i + VOTES[i][k]}")
        right = i in ALL_DRAFTS_RIGHT or k == 0
        return Reply(f"1. Add the two numbers.\n\nSo the sum is {2 * i if right else 2 * i + 3}.")

    return handler


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return sums(tmp_path / "sums.jsonl", ITEMS)


@pytest.fixture
async def report(server: FakeServer, dataset: Path):
    server.reply_with(scripted())
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        return await evaluate(
            engine, load_dataset(dataset), ("single", "vote", "drafts"), samples=5, drafts=3
        )


async def test_every_vote_sample_is_scored_beside_the_majority_at_no_extra_call(
    server: FakeServer, report
):
    assert len(server.requests) == ITEMS * (1 + 5 + 3 + 1)
    vote = {r.item: r for r in report.results if r.mode == "vote"}
    assert [s.stage for s in vote[0].samples] == [f"sample {k}" for k in range(1, 6)]
    for i, offsets in VOTES.items():
        right = offsets.count(0)
        assert sum(s.correct for s in vote[i].samples) == right
        assert vote[i].sample_accuracy == pytest.approx(right / 5)
        assert sorted(s.predicted for s in vote[i].samples) == sorted(
            str(2 * i + o) for o in offsets
        )
    assert {i for i, r in vote.items() if r.correct} == set(range(8))
    (summary,) = [s for s in report.samples if s.mode == "vote"]
    assert (summary.items, summary.answers) == (10, 50)
    assert summary.sample_accuracy == pytest.approx(0.78)  # 39 of 50, every item five samples
    assert (summary.correct, summary.accuracy) == (8, 0.8)  # the majority
    assert (summary.any_right, summary.any_accuracy) == (10, 1.0)
    # Intervals are over the ten items, not the fifty samples.
    assert (summary.sample_low, summary.sample_high) == pytest.approx(wilson(7.8, 10))
    assert (summary.low, summary.high) == pytest.approx(wilson(8, 10))


async def test_each_draft_is_scored_beside_the_synthesis(report):
    drafts = {r.item: r for r in report.results if r.mode == "drafts"}
    assert [s.stage for s in drafts[0].samples] == ["draft 1", "draft 2", "draft 3"]
    for i, r in drafts.items():
        assert sum(s.correct for s in r.samples) == (3 if i in ALL_DRAFTS_RIGHT else 1)
        assert r.correct == (i in SYNTHESIS_RIGHT)
        assert r.confidence is None  # drafts has no confidence of its own
    (summary,) = [s for s in report.samples if s.mode == "drafts"]
    assert summary.sample_accuracy == pytest.approx((6 + 4 / 3) / 10)
    assert (summary.any_right, summary.correct) == (10, 8)


async def test_the_majority_is_checked_against_its_agreement(report):
    vote = {r.item: r for r in report.results if r.mode == "vote"}
    assert [vote[i].confidence for i in range(ITEMS)] == pytest.approx(
        [1.0] * 5 + [0.8, 0.8, 0.6, 0.6, 0.4]
    )
    bands = {b.bucket: (b.items, b.correct) for b in report.confidence if b.mode == "vote"}
    assert bands == {"100%": (5, 5), "80–99%": (2, 2), "60–79%": (2, 1), "below 60%": (1, 0)}
    assert [b.bucket for b in report.confidence] == ["100%", "80–99%", "60–79%", "below 60%"]
    markdown = report_markdown(report)
    assert "### Right answers by the mode's own confidence" in markdown
    assert "| vote | 60–79% | 2 | 60% | 1 | 50.0% |" in markdown
    assert (
        "vote: right on 7 of 7 items (100%) where its confidence was at least 80%, and on 1 of "
        "3 items (33%) where it was below 80%." in markdown
    )
    assert "| vote | 5 | 78.0% |" in markdown
    assert "| drafts | 3 | 73.3% |" in markdown
    # What the confidence is comes from the result type of each mode in the table.
    assert (
        "A mode's confidence is its own: vote's is its agreement, the winning answer's share of "
        "the samples that gave a readable answer. A confidence worth" in markdown
    )


async def test_sample_figures_are_recomputed_from_results_jsonl(report, tmp_path: Path):
    path = tmp_path / "results.jsonl"
    write_results(report, path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for summary in report.samples:
        mine = [r for r in rows if r["mode"] == summary.mode and r["correct"] is not None]
        shares = [sum(s["correct"] for s in r["samples"]) / len(r["samples"]) for r in mine]
        assert [r["sample_accuracy"] for r in mine] == pytest.approx(shares)
        assert summary.sample_accuracy == pytest.approx(sum(shares) / len(shares))
        assert summary.any_right == sum(any(s["correct"] for s in r["samples"]) for r in mine)
        assert summary.correct == sum(r["correct"] for r in mine)
    recomputed: Counter[tuple[str, str]] = Counter()
    right: Counter[tuple[str, str]] = Counter()
    for row in rows:
        if row["confidence"] is not None and row["correct"] is not None:
            key = (row["mode"], confidence_band(row["confidence"]))
            recomputed[key] += 1
            right[key] += row["correct"]
    assert {(b.mode, b.bucket): b.items for b in report.confidence} == dict(recomputed)
    assert {(b.mode, b.bucket): b.correct for b in report.confidence} == dict(right)


async def test_single_draws_nothing_side_by_side(report):
    single = [r for r in report.results if r.mode == "single"]
    assert all(r.samples == [] and r.sample_accuracy is None for r in single)
    assert all(r.confidence is None for r in single)
    assert {s.mode for s in report.samples} == {"vote", "drafts"}


async def test_the_chart_shows_each_answer_drawn_against_the_mode_s(report, tmp_path: Path):
    path = tmp_path / "chart.png"
    draw_chart(report, path)
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    assert width > height * 2  # two panels: each answer against the mode's, and by cost
