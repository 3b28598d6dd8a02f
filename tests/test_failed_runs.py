"""A run that fails: the typed error survives on the run and the exception, and a refine run
that fails late still gives its best answer, marked partial, everywhere it is shown."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from llamaberry import (
    AuthenticationError,
    ContextTooLongError,
    Engine,
    RateLimitError,
    RunFailedError,
)
from llamaberry.cli import cli
from llamaberry.providers.groq import GroqClient
from llamaberry.providers.openai import OpenAICompatibleClient
from llamaberry.providers.retries import RetryPolicy
from llamaberry.store import Store, run_markdown
from llamaberry.testing import FakeServer, Fault, Reply, estimate_prompt_tokens

from .conftest import FIRST_TURN, LATER_TURN, refine_script

FAST_RETRIES = RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.05, max_wait=5.0)


def engine_for(server: FakeServer, provider: str = "groq", **options) -> Engine:
    """An engine on the fake server with quick retries and its own history file."""
    settings = {"model": "openai/gpt-oss-120b", "retry": FAST_RETRIES}
    client = (
        GroqClient(api_key="test-key", base_url=server.groq_base_url, **settings)
        if provider == "groq"
        else OpenAICompatibleClient(api_key=None, base_url=server.openai_base_url, **settings)
    )
    return Engine(client=client, **options)


async def overflow_at_turn_five(server: FakeServer) -> None:
    """Size the server's context so turns 1 to 4 fit and turn 5 does not, as on a small
    local server: measured from a dry run of the same five turns. The server plays llama.cpp,
    which refuses a prompt over its window; engines on it are made with `context=0` (no check
    before sending), so the server is what refuses turn 5."""
    server.reply_with(refine_script)
    async with engine_for(server, history=False) as engine:
        await engine.refine("How many r in strawberry?", turns=5)
    sizes = [estimate_prompt_tokens(r.messages) for r in server.requests]
    assert sizes[3] < sizes[4]
    server.reset()
    server.reply_with(refine_script)
    server.flavor = "llamacpp"
    # One token short of turn 5's prompt: llama.cpp also stops a reply where the window fills
    # up, so turn 4 needs the room to finish its reply.
    server.max_context = sizes[4] - 1


# -- item 2: a late failure keeps the best answer ---------------------------------------------


async def test_turn_five_over_the_context_keeps_turn_four_answer_marked_partial(
    server: FakeServer, provider: str
):
    await overflow_at_turn_five(server)
    async with engine_for(server, provider, history=False, context=0) as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.refine("How many r in strawberry?", turns=5)
    run = failure.value.run
    assert [t.index for t in run.result.turns] == [1, 2, 3, 4]
    assert run.status == "failed"
    assert run.partial is True
    assert run.answer == "3 (turn 4)"
    assert run.error.startswith("Turn 5 failed: ")


async def test_a_failed_synthesis_falls_back_to_the_last_turn_answer(server: FakeServer):
    server.enqueue(
        FIRST_TURN,
        LATER_TURN.format(previous=1, index=2),
        Fault.status(400, {"error": {"message": "synthesis refused"}}),
    )
    async with engine_for(server, history=False) as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.refine("q", turns=2)
    run = failure.value.run
    assert run.result.synthesis is None
    assert (run.answer, run.partial) == ("3 (turn 2)", True)
    assert run.error.startswith("Synthesis failed: ")


async def test_a_turn_cut_off_by_its_budget_is_not_the_fallback(server: FakeServer):
    server.enqueue(
        FIRST_TURN,
        Reply(LATER_TURN.format(previous=1, index=2), finish_reason="length"),
        Fault.status(400, {"error": {"message": "no"}}),
    )
    async with engine_for(server, history=False) as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.refine("q", turns=2)
    assert failure.value.run.answer == "3"  # turn 1's: turn 2 may have lost its ending


async def test_a_run_whose_first_turn_fails_has_no_answer_and_is_not_partial(server: FakeServer):
    server.enqueue(Fault.status(400, {"error": {"message": "no"}}))
    async with engine_for(server, history=False) as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.refine("q", turns=2)
    assert (failure.value.run.answer, failure.value.run.partial) == (None, False)


async def test_a_partial_run_is_saved_to_history_as_partial(server: FakeServer, tmp_path):
    await overflow_at_turn_five(server)
    store = Store(tmp_path / "history.db")
    async with engine_for(server, history=store, context=0) as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.refine("How many r in strawberry?", turns=5)
        await store.aflush()  # saves are written by the store's own thread, off the loop
        saved = store.get(failure.value.run.id)
    assert (saved.status, saved.partial, saved.answer) == ("failed", True, "3 (turn 4)")
    assert saved.error_kind == "context_too_long"
    assert "## Partial answer" in run_markdown(saved)


@pytest.fixture
def cli_env(fake_server: FakeServer) -> dict[str, str]:
    """The CLI pointed at a server whose third call (turn 2 of 2... the synthesis) fails."""
    fake_server.enqueue(
        FIRST_TURN,
        LATER_TURN.format(previous=1, index=2),
        Fault.status(
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 900 tokens.",
                    "type": "invalid_request_error",
                    "code": "context_length_exceeded",
                }
            },
        ),
    )
    return {"GROQ_API_KEY": "test-key", "GROQ_BASE_URL": fake_server.groq_base_url}


def test_ask_json_prints_the_partial_answer_beside_the_error_and_exits_one(cli_env):
    result = CliRunner().invoke(cli, ["ask", "q", "--turns", "2", "--json"], env=cli_env)
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["status"] == "failed"
    assert data["partial"] is True
    assert data["answer"] == "3 (turn 2)"
    assert data["error"].startswith("Synthesis failed: ")
    assert data["error_kind"] == "context_too_long"
    assert result.stderr.startswith("error: Synthesis failed: ")


def test_ask_shows_the_partial_answer_in_a_box_saying_so(cli_env):
    result = CliRunner().invoke(cli, ["ask", "q", "--turns", "2"], env=cli_env)
    assert result.exit_code == 1
    out = result.stdout
    box = out.index("╭─ Partial answer · turn 2's answer, the run did not finish")
    assert "3 (turn 2)" in out[box:]
    assert "╭─ Answer" not in out
    assert "error: Synthesis failed" in result.stderr


# -- item 4: the typed error survives -----------------------------------------------------------


async def test_a_context_overflow_keeps_its_type_on_the_exception_and_the_run(server: FakeServer):
    await overflow_at_turn_five(server)
    async with engine_for(server, history=False, context=0) as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.refine("How many r in strawberry?", turns=5)
    error = failure.value
    assert error.kind == "context_too_long"
    assert isinstance(error.error, ContextTooLongError)
    assert error.__cause__ is error.error
    assert error.run.error_kind == "context_too_long"


async def test_a_rate_limit_is_told_apart_from_a_context_overflow(server: FakeServer):
    server.enqueue(Fault.status(429, headers={"retry-after": "3600"}))
    async with engine_for(server, history=False) as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.single("q")
    assert failure.value.kind == "rate_limit"
    assert isinstance(failure.value.error, RateLimitError)
    assert failure.value.error.reset_in == 3600
    assert failure.value.run.error_kind == "rate_limit"


async def test_a_rejected_key_has_the_auth_kind(provider: str):
    async with (
        FakeServer(api_key="the-right-key") as server,
        engine_for(server, provider, history=False) as engine,
    ):
        with pytest.raises(RunFailedError) as failure:
            await engine.single("q")
    assert failure.value.kind == "auth"
    assert isinstance(failure.value.error, AuthenticationError)


async def test_the_error_kind_is_in_the_json_of_a_failed_run(server: FakeServer):
    server.enqueue(Fault.status(429, headers={"retry-after": "3600"}))
    async with engine_for(server, history=False) as engine:
        events = [event async for event in engine.stream("single", "q")]
    data = events[-1].run.public_dict()
    assert (data["status"], data["error_kind"]) == ("failed", "rate_limit")


async def test_a_finished_run_has_no_error_kind(server: FakeServer):
    async with engine_for(server, history=False) as engine:
        run = await engine.single("q")
    assert (run.error, run.error_kind, run.partial) == (None, None, False)
