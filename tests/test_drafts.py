"""The drafts mode: independent drafts at once, then one synthesis given every draft."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from llamaberry import Engine
from llamaberry.cli import cli
from llamaberry.testing import FakeServer, RecordedRequest

from .conftest import SYNTHESIS, refine_script, together


def drafts_script(count: int):
    """Drafts are held until all `count` have arrived (or 10 s pass), so sent one after
    another they could not all be in flight together; the synthesis gets refine's reply."""

    def reply(request: RecordedRequest, k: int) -> str:
        if "<draft" in (request.user or ""):
            return SYNTHESIS
        return f"Draft text number {k}: there are 3 r's."

    return together(count, reply)


async def test_the_drafts_overlap_then_one_synthesis_gets_every_draft(server: FakeServer):
    server.reply_with(drafts_script(3))
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        run = await engine.run("drafts", "How many r in strawberry?")
    requests = server.requests
    assert len(requests) == 4
    drafts, synthesis = requests[:3], requests[3]
    assert max(r.received_at for r in drafts) < min(r.answered_at or 0 for r in drafts)
    # The synthesis is sent after every draft came back, and holds each of them.
    assert synthesis.received_at > max(r.answered_at or 0 for r in drafts)
    for number in (1, 2, 3):
        assert f"Draft text number {number}:" in (synthesis.user or "")
    assert "How many r in strawberry?" in (synthesis.user or "")
    assert {r.body.get("temperature") for r in drafts} == {0.8}
    assert run.status == "ok"
    assert [d.index for d in run.result.drafts] == [1, 2, 3]
    assert run.result.synthesis.structured
    assert run.answer == run.result.synthesis.concise_answer == 'There are 3 r\'s in "strawberry".'


async def test_drafts_is_the_mode_s_option(server: FakeServer):
    server.reply_with(drafts_script(2))
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        run = await engine.run("drafts", "q", drafts=2)
    assert len(server.requests) == 3 and len(run.result.drafts) == 2
    assert run.settings["drafts"] == 2


def test_compare_runs_all_five_modes(fake_server: FakeServer):
    def handler(request: RecordedRequest):
        if "JSON" in (request.system or ""):
            return json.dumps(
                {"title": "Count", "content": "3 r's.", "next_action": "final_answer"}
            )
        if "Answer: <your final answer>" in (request.system or ""):
            return "Counting.\n\nAnswer: 3"
        if "<draft" in (request.user or ""):
            return SYNTHESIS
        if "Write a careful, complete answer" in (request.system or ""):
            return "A draft: 3."
        return refine_script(request)

    fake_server.reply_with(handler)
    env = {"GROQ_API_KEY": "k", "GROQ_BASE_URL": fake_server.groq_base_url}
    result = CliRunner().invoke(
        cli,
        ["compare", "q", "--modes", "single,refine,steps,vote,drafts", "--json"],
        env=env,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    modes = ["single", "refine", "steps", "vote", "drafts"]
    own = [e for e in data["entries"] if not e["derived"]]
    assert [e["mode"] for e in own] == modes
    assert all(e["status"] == "ok" and e["answer"] for e in own)
    assert [r["mode"] for r in data["runs"]] == modes
    vote = data["runs"][3]["result"]
    assert vote["votes"] == {"3": 5} and vote["agreement"] == 1.0 and len(vote["samples"]) == 5
    drafts = data["runs"][4]["result"]
    assert len(drafts["drafts"]) == 3 and drafts["synthesis"]["structured"]


@pytest.mark.parametrize("mode", ["vote", "drafts"])
def test_the_costly_modes_are_not_in_the_default_set(mode: str):
    from llamaberry import modes as registry

    assert mode in registry.names() and mode not in registry.default_names()
    assert registry.default_names() == ["single", "refine", "steps"]
