"""Context windows: learned from the endpoint, every call made to fit, "too long" in every
server's words, and which limit cut a reply off."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from llamaberry import CallNote, ContextTooLongError, Engine, Message, RunFailedError
from llamaberry.cli import cli
from llamaberry.testing import FakeServer, Reply, estimate_prompt_tokens

from .conftest import refine_script, said

# A long reply that never repeats itself (the loop guard would rightly stop "word word ...").
FILLER = " ".join(f"w{i}" for i in range(2000))
FLAVORS = ["groq", "openai", "vllm", "llamacpp", "ollama"]


def engine_for(server: FakeServer, **options) -> Engine:
    """An engine on the fake, through the SDK a real server of its flavor is reached with."""
    if server.flavor == "groq":
        return Engine(api_key="k", base_url=server.groq_base_url, history=False, **options)
    return Engine(provider="openai", base_url=server.openai_base_url, history=False, **options)


def long_turn(request) -> str:
    """A well-formed reply for each refine call, padded far past a small window."""
    padding = " ".join(f"careful-word-{i}" for i in range(600))
    return refine_script(request).replace("\n## ", f"\n{padding}\n## ")


def sent_tokens(request) -> int:
    """What a request can take of the window: its prompt and the reply budget it asked for."""
    budget = request.body.get("max_completion_tokens") or request.body.get("max_tokens") or 0
    return estimate_prompt_tokens(request.messages) + budget


# -- learning the window -----------------------------------------------------------------------


@pytest.mark.parametrize("flavor", FLAVORS)
async def test_the_window_is_learned_where_each_server_publishes_it(flavor: str):
    async with (
        FakeServer(max_context=5000, flavor=flavor) as server,
        engine_for(server) as engine,
    ):
        run = await engine.single("q")
    assert run.context_window == 5000


async def test_the_window_is_asked_for_once_per_engine():
    async with (
        FakeServer(max_context=5000, flavor="llamacpp") as server,
        engine_for(server) as engine,
    ):
        for _ in range(3):
            await engine.single("q")
    asked = [r.path for r in server.discovery_requests]
    assert asked == ["/v1/models", "/props"]


async def test_the_context_setting_wins_and_nothing_is_asked(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LLAMABERRY_CONTEXT", "3000")
    async with FakeServer(max_context=5000) as server, engine_for(server) as engine:
        run = await engine.single("q")
    assert run.context_window == 3000
    assert server.discovery_requests == []


# -- fitting -----------------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", ["groq", "llamacpp"])
async def test_a_refine_run_in_a_700_token_window_ends_ok_and_no_request_exceeds_it(flavor: str):
    async with FakeServer(max_context=700, flavor=flavor) as server:
        server.reply_with(long_turn)
        async with engine_for(server) as engine:
            events = [event async for event in engine.refine_stream("How many r in strawberry?")]
    run = events[-1].run
    assert run.ok, run.error
    assert run.answer
    chat = server.requests
    assert len(chat) == 4
    assert all(sent_tokens(r) <= 700 for r in chat), [sent_tokens(r) for r in chat]
    # The later turns and the synthesis could not take the earlier turns whole, and said so.
    assert [c.condensed for c in run.calls] == [False, True, True, True]
    assert any("condensed" in note for note in run.notes)
    notes = [e for e in events if isinstance(e, CallNote) and e.note == "condensed"]
    assert [(n.kind, n.index) for n in notes] == [("turn", 2), ("turn", 3), ("synthesis", 1)]
    assert "condensed" in chat[-1].user and "Answer:" in said(chat[-1])


async def test_five_long_turns_on_a_small_llama_cpp_server_end_ok_with_later_turns_condensed():
    # Sized from a dry run so that turn 5 with every earlier turn in full does not fit, as in
    # #19's report of a run that failed at turn 5.
    async with FakeServer() as server:
        server.reply_with(long_turn)
        async with engine_for(server) as engine:
            await engine.refine("How many r in strawberry?", turns=5)
        sizes = [estimate_prompt_tokens(r.messages) for r in server.requests]
        server.reset()
        server.reply_with(long_turn)
        server.flavor, server.max_context = "llamacpp", sizes[4] - 1
        async with engine_for(server) as engine:
            run = await engine.refine("How many r in strawberry?", turns=5)
    assert run.ok, run.error
    assert run.answer == 'There are 3 r\'s in "strawberry".'
    assert all(sent_tokens(r) <= server.max_context for r in server.requests)
    assert run.calls[4].condensed and run.calls[-1].condensed


async def test_a_call_that_fits_whole_is_sent_whole_with_its_budget():
    async with FakeServer(max_context=131072) as server:
        server.reply_with(refine_script)
        async with engine_for(server) as engine:
            run = await engine.refine("q", turns=2)
    assert not any(c.condensed for c in run.calls) and run.notes == []
    assert all(r.body["max_completion_tokens"] == 4096 for r in server.requests)


async def test_the_budget_is_lowered_to_the_room_left_when_that_is_enough():
    async with FakeServer(max_context=2000) as server, engine_for(server) as engine:
        run = await engine.single("q")
    budget = server.requests[0].body["max_completion_tokens"]
    assert 256 <= budget < 4096
    assert sent_tokens(server.requests[0]) <= 2000
    assert run.calls[0].max_tokens == budget
    assert any("may write" in note for note in run.notes)


async def test_a_question_too_long_for_the_window_fails_before_anything_is_sent():
    async with FakeServer(max_context=700) as server, engine_for(server) as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.single("word " * 1000)
    assert server.requests == []
    error = failure.value.run.error
    assert "700-token context window" in error and "\n" not in error
    assert failure.value.run.calls == []


def test_the_cli_says_in_one_line_why_a_question_cannot_fit(fake_server: FakeServer):
    fake_server.max_context = 700
    env = {"GROQ_API_KEY": "k", "GROQ_BASE_URL": fake_server.groq_base_url}
    result = CliRunner().invoke(cli, ["ask", "word " * 1000], env=env)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "context window" in result.stderr
    assert "Traceback" not in result.output
    assert fake_server.requests == []


# -- every server's "too long" -----------------------------------------------------------------


@pytest.mark.parametrize("flavor", FLAVORS)
async def test_every_servers_too_long_is_a_context_too_long_error(flavor: str):
    # The check before sending is off, so the request reaches the server, which refuses it.
    async with (
        FakeServer(max_context=100, flavor=flavor) as server,
        engine_for(server, context=0) as engine,
    ):
        with pytest.raises(ContextTooLongError) as caught:
            await engine.client.complete([Message(role="user", content="word " * 400)])
    line = str(caught.value)
    assert "context window" in line and "\n" not in line
    assert len(server.requests) == 1


# -- which limit cut a reply off (#19 item 3) -------------------------------------------------


async def test_a_reply_stopped_by_the_servers_context_is_not_blamed_on_max_tokens():
    # llama.cpp starts any prompt that fits and stops the reply where its window fills up:
    # here about 300 tokens in, well short of the 512-token budget.
    async with FakeServer(max_context=1000, flavor="llamacpp") as server:
        server.enqueue(Reply(FILLER))
        async with engine_for(server, context=0, max_tokens=512) as engine:
            run = await engine.single("x" * 2700)
    turn = run.result.turns[0]
    assert turn.truncated
    assert turn.usage.completion_tokens < 512
    assert turn.cut_off_by == "server"


async def test_a_reply_stopped_by_a_known_window_says_the_window():
    async with FakeServer(max_context=1000, flavor="llamacpp") as server:
        server.enqueue(Reply(FILLER))
        async with engine_for(server, max_tokens=512) as engine:
            run = await engine.single("x" * 1800)
    turn = run.result.turns[0]
    assert turn.truncated and turn.cut_off_by == "context"


async def test_a_reply_stopped_by_the_budget_says_the_budget():
    async with FakeServer() as server:
        server.enqueue(Reply(FILLER))
        async with engine_for(server, max_tokens=300) as engine:
            run = await engine.single("q")
    turn = run.result.turns[0]
    assert turn.truncated and turn.cut_off_by == "max_tokens"
    assert turn.usage.completion_tokens == 300


def test_the_terminal_names_the_limit_that_cut_a_reply_off(fake_server: FakeServer):
    fake_server.max_context = 1000
    fake_server.flavor = "llamacpp"
    fake_server.enqueue(Reply(FILLER))
    env = {
        "OPENAI_BASE_URL": fake_server.openai_base_url,
        "LLAMABERRY_CONTEXT": "0",
    }
    result = CliRunner().invoke(
        cli,
        ["ask", "x" * 2700, "--mode", "single", "--provider", "openai", "--max-tokens", "512"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "cut off by the server before the token budget" in result.stdout
    assert "cut off by the token budget" not in result.stdout


async def test_the_server_s_own_endpoints_are_asked_with_the_endpoint_s_key():
    # /props sits beside /v1 on the same server, which may guard it with the same key
    # (llama.cpp's --api-key): the window and the slot count both ask it the same way.
    async with FakeServer(max_context=5000, flavor="llamacpp") as server:
        engine = Engine(
            provider="openai", api_key="k-1", base_url=server.openai_base_url, history=False
        )
        async with engine:
            run = await engine.single("q")
            slots = await engine.client.server_slots()
    assert run.context_window == 5000 and slots == 1
    props = [r for r in server.discovery_requests if r.path == "/props"]
    assert len(props) == 2
    assert all(r.headers["authorization"] == "Bearer k-1" for r in props)
