"""The loop guard: a reply stuck repeating itself is stopped early and marked, the run goes
on, and legitimate repetition (tables, lists, code) is left alone."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from llamaberry import CallNote, Engine, TextDelta
from llamaberry.cli import cli
from llamaberry.run.loops import LoopGuard, find_loop
from llamaberry.testing import FakeServer, Reply

from .conftest import FIRST_TURN, refine_script, said

LINE = "I need to check the count of the letter r again to be sure.\n"


def engine_on(server: FakeServer, **options) -> Engine:
    return Engine(api_key="k", base_url=server.groq_base_url, history=False, **options)


def first_turn_loops(request):
    """Turn 1 begins well, then repeats one line until its budget runs out."""
    if "## Critique" in (request.user or "") or "## Concise Answer" in (request.user or ""):
        return refine_script(request)
    return Reply("## Reasoning\n1. Spell the word.\n", repeat=LINE)


# -- what the fake plays -----------------------------------------------------------------------


async def test_the_fake_repeats_a_line_until_the_budget_runs_out():
    async with FakeServer() as server:
        server.enqueue(Reply("start\n", repeat=LINE))
        async with engine_on(server, max_tokens=300, loop_guard=False) as engine:
            run = await engine.single("q")
    turn = run.result.turns[0]
    assert turn.truncated and turn.usage.completion_tokens == 300
    assert turn.content.count(LINE.strip()) > 20


# -- stopping a loop ---------------------------------------------------------------------------


async def test_a_looping_first_turn_is_stopped_within_a_few_dozen_repeats_and_the_run_completes():
    async with FakeServer() as server:
        server.reply_with(first_turn_loops)
        async with engine_on(server) as engine:
            events = [event async for event in engine.refine_stream("How many r in strawberry?")]
    run = events[-1].run
    assert run.ok, run.error
    assert run.answer == 'There are 3 r\'s in "strawberry".'
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta) and e.index == 1)
    streamed = streamed if run.result.turns[0].looped else ""
    assert 0 < streamed.count(LINE) <= 36
    first = run.result.turns[0]
    assert first.looped and not first.truncated
    # The text up to the loop is kept, the loop itself once.
    assert first.content.startswith("## Reasoning\n1. Spell the word.\n")
    assert first.content.count(LINE.strip()) == 1
    assert run.calls[0].looped and run.calls[0].reply == first.content
    # Its tokens are counted as spent, far below the 4,096 the loop would have used.
    assert 0 < first.usage.completion_tokens < 1000
    assert [(e.kind, e.index) for e in events if isinstance(e, CallNote)] == [("turn", 1)]
    assert any("repeating itself" in note for note in run.notes)
    # The later turns were given the text up to the loop, not the loop.
    assert said(server.requests[1]).count(LINE.strip()) == 1
    assert [t.looped for t in run.result.turns[1:]] == [False, False]


async def test_the_loop_guard_can_be_turned_off():
    async with FakeServer() as server:
        server.enqueue(Reply("start\n", repeat=LINE))
        async with engine_on(server, max_tokens=600, loop_guard=False) as engine:
            run = await engine.single("q")
    assert not run.result.turns[0].looped
    assert run.result.turns[0].truncated and run.result.turns[0].usage.completion_tokens == 600


def test_the_cli_flag_turns_the_loop_guard_off_and_the_terminal_says_when_it_stops_one(
    fake_server: FakeServer,
):
    env = {"GROQ_API_KEY": "k", "GROQ_BASE_URL": fake_server.groq_base_url}
    args = ["ask", "q", "--mode", "single", "--max-tokens", "600"]
    fake_server.enqueue(Reply("start\n", repeat=LINE))
    guarded = CliRunner().invoke(cli, args, env=env)
    fake_server.enqueue(Reply("start\n", repeat=LINE))
    unguarded = CliRunner().invoke(cli, [*args, "--no-loop-guard"], env=env)
    assert guarded.exit_code == unguarded.exit_code == 0
    assert "kept repeating itself" in guarded.stdout
    assert "kept repeating itself" not in unguarded.stdout
    assert unguarded.stdout.count(LINE.strip()) > 2 * guarded.stdout.count(LINE.strip())


async def test_the_loop_guard_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LLAMABERRY_LOOP_GUARD", "0")
    async with FakeServer() as server, engine_on(server) as engine:
        assert engine.settings.loop_guard is False


async def test_a_looping_json_step_keeps_its_text_up_to_the_loop_and_the_run_goes_on():
    # The step's content loops until the budget, so the JSON is cut off; the provider then
    # refuses it as invalid JSON, as Groq does, with the generation attached.
    step = {"title": "Count", "content": "Spell it out.", "next_action": "continue"}
    final = {"title": "Done", "content": "Three r's.", "next_action": "final_answer"}
    looping = '{"title": "Recount", "content": "Start.\\n' + "Count again.\\n" * 400
    async with FakeServer() as server:
        server.enqueue(
            json.dumps(step),
            Reply(looping),  # the budget cuts it: cut-off JSON, refused as invalid
            json.dumps(final),
            "3",
        )
        async with engine_on(server, max_tokens=500) as engine:
            run = await engine.steps("How many r in strawberry?", min_steps=3, max_steps=5)
    assert run.ok, run.error
    assert [s.title for s in run.result.steps] == ["Count", "Recount", "Done"]
    second = run.result.steps[1]
    assert second.looped and second.next_action == "continue"
    assert second.content.startswith("Start.\n") and second.content.count("Count again.") == 1
    assert len(server.requests) == 4  # no re-ask of the looping step
    assert run.answer == "3"


async def test_a_looping_json_reply_on_a_server_without_json_checks_is_stopped_too():
    step = {"title": "Count", "content": "Spell it out.", "next_action": "continue"}
    final = {"title": "Done", "content": "Three r's.", "next_action": "final_answer"}
    looping = '{"title": "Recount", "content": "Start.\\n' + "Count again.\\n" * 400
    async with FakeServer(json_validation=False) as server:
        server.enqueue(json.dumps(step), Reply(looping), json.dumps(final), "3")
        async with engine_on(server, max_tokens=500) as engine:
            run = await engine.steps("q", min_steps=3, max_steps=5)
    assert run.ok, run.error
    assert run.result.steps[1].looped and run.result.steps[1].content.count("Count again.") == 1
    assert run.calls[1].looped


# -- no false alarms ---------------------------------------------------------------------------

TABLE = "| n | n squared | n cubed |\n|---|---|---|\n" + "".join(
    f"| {n} | {n * n} | {n**3} |\n" for n in range(1, 301)
)
NUMBERED = "".join(f"{n}. Check item {n} of the list against the rule.\n" for n in range(1, 301))
CODE = (
    "```python\n"
    + "".join(
        f"def handler_{n}(event):\n    if event is None:\n        return None\n"
        f"    return process(event, {n})\n\n"
        for n in range(1, 80)
    )
    + "```\n"
)
ZEROS = "| a | b | c | d |\n|---|---|---|---|\n" + "| 0 | 0 | 0 | 0 |\n" * 25 + "\nAll zero."
BRACES = "x = [\n" + "    [\n" * 40 + "    ]\n" * 40 + "]\n" + "=" * 80 + "\n"
CHORUS = ("Verse about the sea.\nAnd the chorus goes la la la, la la la.\n" * 3 + "The end.\n") * 4


@pytest.mark.parametrize(
    "text",
    [TABLE, NUMBERED, CODE, ZEROS, BRACES, CHORUS],
    ids=["table", "numbered-list", "code", "table-of-zeros", "brackets-and-rule", "chorus"],
)
async def test_legitimate_repetition_is_not_taken_for_a_loop(text: str):
    assert find_loop(text) is None
    async with FakeServer() as server:
        server.enqueue(Reply(text, chunk_words=3))
        async with engine_on(server) as engine:
            run = await engine.single("q")
    assert not run.result.turns[0].looped
    assert run.result.turns[0].content == text


def test_the_guard_sees_a_loop_only_once_it_is_long_enough():
    guard = LoopGuard()
    for _ in range(5):
        assert guard.feed(LINE) is None  # five repeats of a line: not yet clear
    for _ in range(30):
        if guard.feed(LINE):
            break
    assert guard.loop is not None and guard.loop.unit.strip("\n") in LINE


def test_a_loop_inside_a_paragraph_is_found_and_cut_after_one_copy():
    paragraph = (
        "We consider the problem again from the start and reach the same place as before, "
        "so we consider the problem again.\n\n"
    )
    text = "Intro.\n\n" + paragraph * 8
    loop = find_loop(text)
    assert loop is not None
    assert text[: loop.kept].count("We consider the problem again from the start") == 1


def test_first_turn_fixture_is_not_a_loop():
    assert find_loop(FIRST_TURN * 3) is None
