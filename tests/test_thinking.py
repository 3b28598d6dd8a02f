"""The model's own thinking, in each of the three forms real servers send it: kept on every call,
turn and step, streamed as its own event, never taken for the reply and never sent back."""

from __future__ import annotations

import io
import json
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

from llamaberry import Engine, TextDelta, ThinkingDelta
from llamaberry.cli import cli
from llamaberry.cli.render import TerminalView
from llamaberry.engine import collect
from llamaberry.providers.streams import ThinkTags, split_thinking
from llamaberry.testing import FakeServer, RecordedRequest, Reply

from .conftest import refine_script
from .test_steps import step_json

FORMS = ["reasoning", "reasoning_content", "think_tags"]
THOUGHT = "SECRET-THOUGHT about the letters"


def thinking_script(form: str):
    """Well-formed refine replies, each after a thinking phase sent in `form`."""
    counter = iter(range(1, 1000))

    def script(request: RecordedRequest) -> Reply:
        return Reply(
            refine_script(request), reasoning=f"{THOUGHT} {next(counter)}", thinking_as=form
        )

    return script


def base_url(server: FakeServer, provider: str) -> str:
    return server.groq_base_url if provider == "groq" else server.openai_base_url


def assert_never_sent_back(server: FakeServer) -> None:
    for request in server.requests:
        for message in request.messages:
            assert "SECRET-THOUGHT" not in message["content"]
            assert "think>" not in message["content"]


@pytest.mark.parametrize("form", FORMS)
async def test_thinking_is_kept_on_each_turn_and_never_in_content_answers_or_requests(
    server: FakeServer, provider: str, form: str
):
    server.reply_with(thinking_script(form))
    async with Engine(provider=provider, api_key="k", base_url=base_url(server, provider)) as e:
        run = await e.refine("How many r in strawberry?", turns=2)
    assert [turn.thinking for turn in run.result.turns] == [f"{THOUGHT} 1", f"{THOUGHT} 2"]
    assert run.result.synthesis is not None and run.result.synthesis.thinking == f"{THOUGHT} 3"
    for part in [*run.result.turns, run.result.synthesis]:
        assert "SECRET" not in part.content and "think>" not in part.content
        assert "SECRET" not in part.answer
    assert run.answer == 'There are 3 r\'s in "strawberry".'
    assert [call.thinking for call in run.calls] == [f"{THOUGHT} {n}" for n in (1, 2, 3)]
    assert_never_sent_back(server)


@pytest.mark.parametrize("form", FORMS)
async def test_thinking_streams_as_its_own_events_before_the_reply(
    server: FakeServer, provider: str, form: str
):
    server.reply_with(thinking_script(form))
    async with Engine(provider=provider, api_key="k", base_url=base_url(server, provider)) as e:
        events = [event async for event in e.single_stream("How many r in strawberry?")]
    thinking = [ev for ev in events if isinstance(ev, ThinkingDelta)]
    text = [ev for ev in events if isinstance(ev, TextDelta)]
    assert len(thinking) > 1  # streamed piece by piece, not whole at the end
    assert "".join(ev.text for ev in thinking) == f"{THOUGHT} 1"
    assert events.index(thinking[-1]) < events.index(text[0])
    assert "".join(ev.text for ev in text) == events[-1].run.result.turns[0].content  # type: ignore[union-attr]


@pytest.mark.parametrize("form", FORMS)
async def test_thinking_around_json_steps_is_kept_apart_from_the_step(
    server: FakeServer, provider: str, form: str
):
    replies = [
        Reply(
            step_json(n, "final_answer" if n == 3 else "continue"),
            reasoning=f"{THOUGHT} {n}",
            thinking_as=form,
        )
        for n in (1, 2, 3)
    ]
    server.enqueue(*replies, Reply("Three.", reasoning=f"{THOUGHT} 4", thinking_as=form))
    async with Engine(provider=provider, api_key="k", base_url=base_url(server, provider)) as e:
        run = await e.steps("How many r in strawberry?")
    assert [step.thinking for step in run.result.steps] == [f"{THOUGHT} {n}" for n in (1, 2, 3)]
    assert run.result.final is not None and run.result.final.thinking == f"{THOUGHT} 4"
    assert run.answer == "Three."
    assert all("SECRET" not in step.content for step in run.result.steps)
    assert_never_sent_back(server)


async def test_reasoning_tokens_are_counted_per_call_and_summed(server: FakeServer):
    server.reply_with(thinking_script("reasoning"))
    async with Engine(api_key="k", base_url=server.groq_base_url) as engine:
        run = await engine.refine("How many r in strawberry?", turns=2)
    words = len(f"{THOUGHT} 1".split())
    assert [turn.usage.reasoning_tokens for turn in run.result.turns] == [words, words]
    assert run.usage.reasoning_tokens == 3 * words
    assert run.usage.completion_tokens > run.usage.reasoning_tokens


@pytest.mark.parametrize("form", FORMS)
def test_ask_json_keeps_thinking_on_turns_and_out_of_answers(fake_server: FakeServer, form: str):
    fake_server.reply_with(thinking_script(form))
    env = {"GROQ_API_KEY": "test-key", "GROQ_BASE_URL": fake_server.groq_base_url}
    result = CliRunner().invoke(
        cli, ["ask", "How many r in strawberry?", "--json"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    turns, synthesis = data["result"]["turns"], data["result"]["synthesis"]
    assert [turn["thinking"] for turn in turns] == [f"{THOUGHT} {n}" for n in (1, 2, 3)]
    assert synthesis["thinking"] == f"{THOUGHT} 4"
    for part in [*turns, synthesis]:
        assert "SECRET" not in part["content"] and "SECRET" not in part["answer"]
    assert "SECRET" not in data["answer"]
    assert data["usage"]["reasoning_tokens"] == 4 * len(f"{THOUGHT} 1".split())
    assert_never_sent_back(fake_server)


def test_the_terminal_shows_thinking_dimmed_and_apart_from_the_reply():
    out = io.StringIO()
    view = TerminalView(console=Console(file=out, force_terminal=True, color_system="standard"))
    view.show(ThinkingDelta(kind="turn", index=1, text="let me count"))
    view.show(TextDelta(kind="turn", index=1, text="## Answer\n3"))
    shown = out.getvalue()
    assert shown.startswith("\x1b[2")  # dim (SGR 2) is switched on before the thinking
    # Read as a person sees it: the thinking may be written in more than one styled piece
    # (the end of a piece that could begin a known key waits for the next one).
    seen = re.sub(r"\x1b\[[0-9;]*m", "", shown)
    assert seen.index("let me count") < seen.index("## Answer")
    assert "\n\n## Answer" in seen  # the reply starts on a line of its own


async def test_time_to_first_visible_text_counts_the_thinking_phase():
    # A reasoning model thinks first: the first visible text comes after all its thinking.
    async with FakeServer(chunk_delay=0.01) as server:
        server.enqueue(Reply("the answer", reasoning="one two three four five"))
        async with Engine(api_key="k", base_url=server.groq_base_url) as engine:
            events = [event async for event in engine.single_stream("q")]
    kinds = [type(event).__name__ for event in events]
    first_text = kinds.index("TextDelta")
    assert kinds[:first_text].count("ThinkingDelta") == 5


@pytest.mark.parametrize(
    ("pieces", "thinking", "visible"),
    [
        (["<think>a b</think>", "\n\nanswer"], "a b", "answer"),
        (["<thi", "nk>a", " b</th", "ink>", "\n\n", "answer"], "a b", "answer"),
        (["  <think>", "x</think>ans"], "x", "ans"),
        (["no thinking here"], "", "no thinking here"),
        (["An answer about <think> tags"], "", "An answer about <think> tags"),
        (["<b>bold</b> answer"], "", "<b>bold</b> answer"),
        (["<think>cut off mid-thought"], "cut off mid-thought", ""),
        (["<", "answer"], "", "<answer"),
    ],
)
def test_inline_think_tags_split_out_wherever_the_chunks_break(pieces, thinking, visible):
    for split in (pieces, list("".join(pieces))):  # as sent, and one character at a time
        tags = ThinkTags()
        out = [part for piece in split for part in tags.feed(piece)] + tags.flush()
        assert "".join(t for is_thinking, t in out if is_thinking) == thinking
        assert "".join(t for is_thinking, t in out if not is_thinking) == visible
    assert split_thinking("".join(pieces)) == (thinking, visible)


async def test_a_whole_reply_with_inline_thinking_is_split_too(server: FakeServer):
    server.enqueue(Reply('{"a": 1}', reasoning="hmm", thinking_as="think_tags"))
    async with Engine(api_key="k", base_url=server.groq_base_url) as engine:
        reply = await engine.client.complete([], json_mode=True)
    assert (reply.text, reply.thinking) == ('{"a": 1}', "hmm")


async def test_collect_keeps_thinking_in_the_history(server: FakeServer, tmp_path):
    from llamaberry import Store

    server.reply_with(thinking_script("reasoning_content"))
    store = Store(tmp_path / "h.db")
    async with Engine(api_key="k", base_url=server.groq_base_url, history=store) as engine:
        run = await collect(engine.single_stream("q"))
    saved = Store(tmp_path / "h.db").get(run.id)
    assert saved.result.turns[0].thinking == f"{THOUGHT} 1"
    assert saved.calls[0].thinking == f"{THOUGHT} 1"


def test_the_web_page_folds_each_calls_thinking_apart_from_its_reply():
    from llamaberry_ui.views import fold

    from llamaberry import CallStarted

    view = fold(
        [
            CallStarted(kind="turn", index=1),
            ThinkingDelta(kind="turn", index=1, text="let me <script>count</script>"),
            TextDelta(kind="turn", index=1, text="## Answer\n3"),
        ]
    )
    thinking, reply = view.messages()
    assert thinking["metadata"]["title"] == "Thinking · Turn 1"
    assert "let me" in thinking["content"] and "<script>" not in thinking["content"]
    assert "let me" not in reply["content"] and reply["metadata"]["title"] == "Turn 1"
