"""The drafts mode: independent drafts at once, then one synthesis given every draft."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

import pytest
from click.testing import CliRunner

from llamaberry import Engine
from llamaberry.cli import cli
from llamaberry.modes import prompts
from llamaberry.testing import FakeServer, RecordedRequest, Reply

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


# -- a model that writes our prompt back ------------------------------------------------------

# What the drafts say, by the order their requests arrive: each a real answer of its own.
DRAFT_ANSWERS = [
    "There are 3 r letters.",
    "The letter r appears 3 times.",
    "Three r's, at positions 3, 8 and 9.",
]
EDITOR = prompts.DRAFTS_SYNTHESIS.format(count=3)
# Halves of two of the editor's sentences spliced together, a word changed: no sentence of ours
# whole, as the embedded 135M model writes them.
SPLICED = (
    "Judge each draft by whether its reasoning survives checking, giving the answer plainly, "
    "in whatever format the question asked for."
)


def editing_model(synthesis: Callable[[str], str], drafts: Sequence[str | Reply] = DRAFT_ANSWERS):
    """Drafts answered from `drafts` in the order they arrive; the synthesis with
    `synthesis(what it was sent)`."""
    arrived: list[str] = []

    def reply(request: RecordedRequest) -> str | Reply:
        asked = request.user or ""
        if "<draft" in asked:
            return synthesis(asked)
        arrived.append(asked)
        return drafts[len(arrived) - 1]

    return reply


def first_draft(asked: str) -> str:
    """The first draft the synthesis was given, in our tags, as written in its request."""
    found = re.search(r"<draft number=\"\d+\">.*?</draft>", asked, re.DOTALL)
    assert found is not None
    return found.group()


def falls_back_to_draft_1(run, synthesis_starts: str) -> None:
    """The run's answer is the first draft's, a note says so, and the synthesis is kept."""
    assert run.status == "ok"
    assert run.answer == run.result.drafts[0].content.strip()
    assert run.answer in DRAFT_ANSWERS
    assert any(
        "only repeated the prompt and the drafts, so the answer is draft 1's" in note
        for note in run.notes
    ), run.notes
    assert run.result.synthesis.content.startswith(synthesis_starts)


async def test_a_synthesis_that_writes_back_our_instructions_falls_back_to_the_first_draft(
    server: FakeServer, engine: Engine
):
    paragraph = " ".join(EDITOR.split("\n\n")[0].split())  # our first paragraph, as sent

    server.reply_with(editing_model(lambda asked: f"{paragraph}\n\n{prompts.DRAFTS_SYSTEM}"))
    run = await engine.run("drafts", "How many r in strawberry?")
    falls_back_to_draft_1(run, "You are the editor.")


async def test_a_synthesis_that_splices_our_instructions_falls_back_to_the_first_draft(
    server: FakeServer, engine: Engine
):
    sent = " ".join(f"{prompts.DRAFTS_SYSTEM} {EDITOR}".split())
    assert SPLICED not in sent and SPLICED[:40] in sent  # a splice, not a sentence of ours

    server.reply_with(editing_model(lambda asked: f"## Concise Answer\n{SPLICED}"))
    run = await engine.run("drafts", "How many r in strawberry?")
    falls_back_to_draft_1(run, "## Concise Answer\nJudge each draft")


async def test_the_embedded_model_s_own_splice_falls_back_to_the_first_draft(
    server: FakeServer, engine: Engine
):
    # The 135M model's synthesis for a question of the tricky set: our words, and between them
    # 'is', 'it', 'single', none of them an answer.
    spliced = (
        "The final answer is a single sentence, and it is concise, with the detail the "
        "question asked for."
    )
    server.reply_with(editing_model(lambda asked: spliced))
    run = await engine.run("drafts", "How many sisters does one of Alice's brothers have?")
    falls_back_to_draft_1(run, "The final answer is a single sentence")


async def test_a_synthesis_that_only_copies_a_draft_in_our_tags_falls_back_to_the_first_draft(
    server: FakeServer, engine: Engine
):
    server.reply_with(editing_model(first_draft))
    run = await engine.run("drafts", "How many r in strawberry?")
    falls_back_to_draft_1(run, '<draft number="1">')


async def test_a_synthesis_that_quotes_the_drafts_and_concludes_keeps_its_own_answer(
    server: FakeServer, engine: Engine
):
    own = "Recounting s-t-r-a-w-b-e-r-r-y letter by letter, the word has three r's."
    server.reply_with(editing_model(lambda asked: f"{first_draft(asked)}\n{own}"))
    run = await engine.run("drafts", "How many r in strawberry?")
    # Its own reply, less our tags: the draft it quotes and its conclusion, no fallback.
    quoted = run.result.drafts[0].content.strip()
    assert run.answer == f"{quoted}\n\n{own}"
    assert any("left out of the answer" in note for note in run.notes), run.notes
    assert not any("the answer is draft" in note for note in run.notes)

    # One that names the drafts in its own sentences has written nothing of ours back.
    cited = (
        "## Concise Answer\nDraft 1 and draft 2 count 3 r's and draft 3 agrees; a recount of "
        "s-t-r-a-w-b-e-r-r-y confirms three."
    )
    server.reply_with(editing_model(lambda asked: cited))
    run = await engine.run("drafts", "How many r in strawberry?")
    assert run.answer == cited.removeprefix("## Concise Answer\n")
    assert not any("prompt" in note for note in run.notes), run.notes


async def test_a_draft_that_writes_back_our_prompt_is_not_the_answer_fallen_back_on(
    server: FakeServer, engine: Engine
):
    # One draft only writes back its instruction and finishes; the other answers but is cut off.
    # The whole one would be the fallback if a draft's echo were taken for an answer.
    echo = f"{prompts.DRAFT}\n</question>"
    cut_off = Reply("There are 3 r letters, at positions", finish_reason="length")
    server.reply_with(editing_model(first_draft, drafts=[echo, cut_off]))
    run = await engine.run("drafts", "How many r in strawberry?", drafts=2)
    assert run.status == "ok"
    assert sorted(d.truncated for d in run.result.drafts) == [False, True]
    answered = next(d for d in run.result.drafts if d.truncated)
    assert run.answer == "There are 3 r letters, at positions"
    assert any(f"the answer is draft {answered.index}'s" in note for note in run.notes), run.notes
    # The echoing draft keeps what it wrote.
    assert any(d.content.startswith("Write a careful, complete answer") for d in run.result.drafts)


async def test_a_well_formed_drafts_synthesis_is_untouched(server: FakeServer, engine: Engine):
    server.reply_with(editing_model(lambda asked: SYNTHESIS))
    run = await engine.run("drafts", "How many r in strawberry?")
    assert run.answer == 'There are 3 r\'s in "strawberry".'
    assert not run.notes
