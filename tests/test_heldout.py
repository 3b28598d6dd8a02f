"""The held-out replies (tests/heldout/replies.jsonl, written before the scorer was tuned and
not used while tuning it) scored through `llamaberry eval --modes single` against a server that
returns each reply as written: the verdicts agree with a careful grader's on at least 95%."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from llamaberry.cli import cli
from llamaberry.testing import FakeServer, RecordedRequest, Reply

HELD_OUT = Path(__file__).parent / "heldout" / "replies.jsonl"


def test_held_out_replies_are_scored_as_a_careful_grader_would(
    fake_server: FakeServer, tmp_path: Path
):
    cases = [json.loads(line) for line in HELD_OUT.read_text(encoding="utf-8").splitlines()]
    dataset = tmp_path / "heldout.jsonl"
    dataset.write_text(
        "".join(
            json.dumps({"question": c["question"], "answer": c["answer"]}) + "\n" for c in cases
        )
    )
    replies = {c["question"]: c["reply"] for c in cases}

    def reply(request: RecordedRequest) -> Reply:
        return Reply(replies[request.user.strip()])

    fake_server.reply_with(reply)
    env = {"GROQ_API_KEY": "test-key", "GROQ_BASE_URL": fake_server.groq_base_url}
    env["LLAMABERRY_HISTORY"] = "0"
    out = tmp_path / "out"
    args = ["eval", str(dataset), "--modes", "single", "--out", str(out), "--temperature", "0"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len(cases)
    right = {c["question"]: c["right"] for c in cases}
    disagree = [r["question"] for r in rows if r["correct"] != right[r["question"]]]
    agreement = 1 - len(disagree) / len(rows)
    print(f"held-out agreement: {len(rows) - len(disagree)}/{len(rows)} = {agreement:.1%}")
    for question in disagree:
        print("disagrees:", question.splitlines()[0])
    assert agreement >= 0.95, disagree
    report = (out / "report.md").read_text()
    assert report.startswith("## Eval: heldout")
    assert "**Bottom line:**" in report and "### What produced this report" in report
    assert "test-key" not in report
