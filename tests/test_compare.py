"""Compare: several modes on one question, run at once, reported side by side."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from click.testing import CliRunner

from llamaberry import Engine, InputError
from llamaberry.cli import cli
from llamaberry.store import Store
from llamaberry.testing import FakeServer, Fault, RecordedRequest, Reply

from .conftest import refine_script

QUESTION = 'How many times does the letter r appear in "strawberry"?'


def mode_script(
    single: str = "There are three r's in strawberry.",
    final: str = "3",
    latency: dict[str, float] | None = None,
):
    """A handler answering every mode's calls well-formed; `latency` slows a mode's calls."""
    delays = latency or {}

    def handler(request: RecordedRequest) -> Reply | Fault:
        if request.json_mode:  # a steps step
            number = sum(m.get("role") == "assistant" for m in request.messages) + 1
            step = {
                "title": f"Check {number}",
                "content": "Spell it out and count the r letters.",
                "next_action": "continue" if number < 3 else "final_answer",
            }
            return Reply(json.dumps(step), latency=delays.get("steps"))
        if request.system is None:  # the single mode sends the bare question
            return Reply(single, latency=delays.get("single"))
        if is_refine(request):
            return Reply(refine_script(request), latency=delays.get("refine"))
        return Reply(final, latency=delays.get("steps"))  # the steps mode's final answer

    return handler


@pytest.fixture
async def engine(server: FakeServer):
    async with Engine(api_key="test-key", base_url=server.groq_base_url, turns=1) as built:
        yield built


def mode_of(request: RecordedRequest) -> str:
    """Which mode sent `request`, told apart the way `mode_script` tells them apart."""
    if request.json_mode:
        return "steps"
    if request.system is None:
        return "single"
    return "refine" if is_refine(request) else "steps"


def is_refine(request: RecordedRequest) -> bool:
    """Refine names its section contracts: turn 1's in its system prompt, every later call's
    in its own instruction (the last user message). The steps mode's prompts name none."""
    return "## " in (request.system or "") + (request.user or "")


async def test_modes_run_concurrently(server: FakeServer, engine: Engine):
    # Every call is held until each of the three modes has a call at the server. Run one after
    # another, the first mode's call would wait out the gate alone and be answered before the
    # other modes sent anything; the order of arrivals and answers shows which happened, on a
    # machine of any speed (a wall-clock bound did not, on a busy 2-core box).
    answer = mode_script()
    seen: set[str] = set()
    all_in_flight = asyncio.Event()

    async def gated(request: RecordedRequest) -> Reply | Fault:
        seen.add(mode_of(request))
        if seen == {"single", "refine", "steps"}:
            all_in_flight.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in_flight.wait(), 10)
        all_in_flight.set()  # timed out: let the rest through, the order below then fails
        return answer(request)

    server.reply_with(gated)
    started = time.perf_counter()
    result = await engine.compare(QUESTION, modes=("single", "refine", "steps"))
    wall = time.perf_counter() - started
    assert [e.status for e in result.entries] == ["ok"] * 4
    firsts = [next(r for r in server.requests if mode_of(r) == m) for m in sorted(seen)]
    assert len(firsts) == 3
    # Every mode's first call reached the server before any of them was answered.
    assert max(r.received_at for r in firsts) < min(r.answered_at or 0 for r in firsts)
    # The comparison reports its own wall time, which spans each mode's run.
    assert max(run.seconds for run in result.runs) <= result.seconds <= wall


async def test_every_mode_is_reported_with_answer_tokens_and_seconds(
    server: FakeServer, engine: Engine
):
    server.reply_with(mode_script())
    result = await engine.compare(QUESTION)
    assert [e.label for e in result.entries] == ["single", "refine", "refine turn 1", "steps"]
    assert result.entry("single").answer == "There are three r's in strawberry."
    assert result.entry("refine").answer == 'There are 3 r\'s in "strawberry".'
    assert result.entry("steps").answer == "3"
    for entry, run in zip(
        [result.entry("single"), result.entry("refine"), result.entry("steps")],
        result.runs,
        strict=True,
    ):
        assert entry.run_id == run.id and entry.mode == run.mode
        assert entry.usage == run.usage and entry.usage.total_tokens > 0
        assert entry.seconds == run.seconds > 0


async def test_refine_turn_one_is_reported_at_no_extra_cost(server: FakeServer, engine: Engine):
    server.reply_with(mode_script())
    result = await engine.compare(QUESTION, modes=("refine",))
    # One turn and a synthesis: no call was made for the derived entry.
    assert len(server.requests) == 2
    refine = result.runs[0]
    first = result.entry("refine turn 1")
    assert first.derived and first.run_id == refine.id
    assert first.answer == refine.result.turns[0].answer == "3"
    assert first.usage == refine.result.turns[0].usage
    assert first.usage.total_tokens < result.entry("refine").usage.total_tokens


async def test_a_failing_mode_is_reported_and_the_others_finish(server: FakeServer, engine):
    script = mode_script()
    server.reply_with(lambda r: Fault.status(401) if r.system is None else script(r))
    result = await engine.compare(QUESTION, modes=("single", "refine"))
    single = result.entry("single")
    assert single.status == "failed" and single.answer is None
    assert "Answer failed" in single.error
    assert result.entry("refine").status == "ok"


async def test_an_unknown_mode_is_refused_before_any_request(server: FakeServer, engine):
    with pytest.raises(InputError, match="Unknown mode 'dream'"):
        await engine.compare(QUESTION, modes=("single", "dream"))
    assert server.requests == []


async def test_compared_runs_are_all_saved(server: FakeServer, engine: Engine):
    server.reply_with(mode_script())
    result = await engine.compare(QUESTION)
    assert engine.history is not None
    await engine.history.aflush()  # saves are written off the event loop, by the store's thread
    with Store() as store:
        assert {r.id for r in store.list_runs()} == {run.id for run in result.runs}


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def env(fake_server: FakeServer) -> dict[str, str]:
    fake_server.reply_with(mode_script())
    return {"GROQ_API_KEY": "test-key", "GROQ_BASE_URL": fake_server.groq_base_url}


def test_cli_compare_json_has_every_entry(env):
    result = CliRunner().invoke(
        cli, ["compare", QUESTION, "--turns", "1", "--json"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    labels = [e["label"] for e in data["entries"]]
    assert labels == ["single", "refine", "refine turn 1", "steps"]
    assert all({"answer", "seconds", "usage"} <= set(e) for e in data["entries"])
    assert all("calls" not in run for run in data["runs"])


def test_cli_compare_prints_a_table_of_answers(env):
    result = CliRunner().invoke(
        cli, ["compare", QUESTION, "--modes", "single,refine", "-n", "1"], env=env
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "three r's" in out and "refine turn 1" in out and "steps" not in out
    assert "tokens" in out and "seconds" in out


def test_cli_compare_bad_modes_is_a_usage_error(env):
    result = CliRunner().invoke(cli, ["compare", QUESTION, "--modes", "single,fast"], env=env)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --modes takes")
