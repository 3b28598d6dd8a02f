"""The web UI launched on 127.0.0.1 against the fake server, driven with gradio_client.

The app here has no key of its own: every run brings the key a person would type in the page,
and the fake server refuses any other, so each test also checks the per-session key path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Literal

import gradio as gr
import pytest
from click.testing import CliRunner
from gradio_client import Client
from llamaberry_ui.app import build_app, serve
from pydantic import Field

from llamaberry.cli import cli
from llamaberry.core.events import CallFinished
from llamaberry.core.options import Options
from llamaberry.core.results import CallResult, ModeResult
from llamaberry.core.settings import Settings
from llamaberry.run.merge import merge
from llamaberry.run.runner import ModeSpec, RunContext, to_messages
from llamaberry.testing import FakeServer, Fault, RecordedRequest, Reply

from .conftest import FIRST_TURN, SYNTHESIS, question_of, refine_script

KEY = "session-key-7f3a9c"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def launched(settings: Settings, **options) -> Iterator[str]:
    """Serve the app for `settings` on an ephemeral local port; yield its URL."""
    app = build_app(settings, **options)
    port = free_port()
    serve(app, host="127.0.0.1", port=port, block=False, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeServer]:
    with FakeServer(api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def url(fake: FakeServer) -> Iterator[str]:
    # No retries: a provider failure should reach the page at once, not after backoff.
    settings = Settings(base_url=fake.groq_base_url, max_retries=0)
    with launched(settings, history=False) as address:
        yield address


@pytest.fixture
def server(fake: FakeServer) -> FakeServer:
    fake.reset()
    fake.reply_with(refine_script)
    return fake


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[Client]:
    """A browser session, as gradio_client sees one."""
    with contextlib.closing(Client(url, verbose=False)) as built:
        yield built


@pytest.fixture(scope="module")
def other(url: str) -> Iterator[Client]:
    """A second browser session."""
    with contextlib.closing(Client(url, verbose=False)) as built:
        yield built


def settings_args(key: str = KEY, model: str = "openai/gpt-oss-120b"):
    """The Settings panel's values, in the order the run endpoints take them (each mode's
    options follow, named as its options model names them)."""
    return [model, 1.0, "default", key]


def unwrap(outputs) -> tuple:
    """Output values without Gradio's update wrappers (used where visibility changes too)."""
    return tuple(
        o.get("value") if isinstance(o, dict) and o.get("__type__") == "update" else o
        for o in outputs
    )


def predict(client: Client, *args, api_name: str, **options) -> tuple:
    """Run an endpoint to the end and return its last outputs, unwrapped."""
    return unwrap(client.predict(*args, api_name=api_name, **options))


def text(message: dict) -> str:
    """A Chatbot message's text, whether Gradio sent it as a string or as parts."""
    content = message["content"]
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return content


def chat_titles(chat: list[dict]) -> list[str]:
    return [m["metadata"]["title"] for m in chat]


def wait_for(job, predicate, timeout: float = 15.0):
    """Poll a job's streamed outputs until one satisfies `predicate`; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for output in map(unwrap, job.outputs()):
            if predicate(output):
                return output
        time.sleep(0.02)
    raise AssertionError(f"no output matched within {timeout}s; last: {job.outputs()[-1:]}")


def no_secret(value: object) -> bool:
    return KEY not in json.dumps(value, default=str)


# -- refine --------------------------------------------------------------------------------


def test_refine_streams_each_turn_then_the_synthesis_and_sets_the_answer_apart(server, client):
    server.reply_with(None)
    server.enqueue(Reply(FIRST_TURN, chunk_delay=0.01))
    server.reply_with(refine_script)
    job = client.submit("How many r in strawberry?", *settings_args(), api_name="/refine")
    answer, chat, summary, error, _ = unwrap(job.result(timeout=30))

    assert chat_titles(chat) == ["Turn 1", "Turn 2", "Turn 3", "Synthesis"]
    # The turns stay open once done; the synthesis folds.
    assert [m["metadata"].get("status") for m in chat] == [None, None, None, "done"]
    assert all("tokens" in m["metadata"]["log"] and m["metadata"]["duration"] > 0 for m in chat)
    # The concise answer as headline, the comprehensive answer under it.
    assert answer == (
        '### There are 3 r\'s in "strawberry".\n\n'
        'The word "strawberry" contains the letter r three times.'
    )
    assert summary.startswith("Done · ")
    assert not error
    # Turn 1 was seen part-written, with its spinner, before it finished.
    partial = [
        o[1][0]
        for o in map(unwrap, job.outputs())
        if o[1] and o[1][0]["metadata"].get("status") == "pending"
    ]
    assert any(
        FIRST_TURN.startswith(text(m)) and 0 < len(text(m)) < len(FIRST_TURN) for m in partial
    )
    assert [r.headers["authorization"] for r in server.requests] == [f"Bearer {KEY}"] * 4
    assert all(no_secret(o) for o in job.outputs())


def test_turns_from_the_refine_tab_options_are_used(server, client):
    _, chat, _, _, _ = predict(client, "q", *settings_args(), turns=1, api_name="/refine")
    assert chat_titles(chat) == ["Turn 1", "Synthesis"]


def test_stop_closes_the_run_at_once_and_keeps_the_finished_turn(server, client):
    server.reply_with(None)
    slow = " ".join(["word"] * 200)
    server.enqueue(FIRST_TURN, Reply(slow, chunk_delay=0.05))
    job = client.submit("q", *settings_args(), api_name="/refine")
    wait_for(job, lambda o: len(o[1]) == 2 and text(o[1][1]).startswith("word"))

    job.cancel()
    answer, chat, summary, error, _ = predict(client, api_name="/stop_refine")

    assert chat_titles(chat) == ["Turn 1", "Turn 2 (stopped)"]
    assert text(chat[0]) == FIRST_TURN
    assert chat[1]["metadata"].get("status") != "pending"
    assert summary.startswith("Stopped")
    assert not answer and not error
    sent = len(server.requests)
    time.sleep(0.5)
    assert sent == len(server.requests) == 2  # no synthesis, nothing after Stop


async def test_a_stop_that_lands_with_an_event_still_cancels_every_stream():
    # Stop cancels the task reading `merge` (the page reads it through `watch`). On Python 3.11 `asyncio.wait_for` dropped a cancel
    # that arrived in the same loop turn as the next event: the page drew "Stopped" after its
    # grace while the run streamed on and asked for its next turn.
    closed = asyncio.Event()
    reader: asyncio.Task[None] | None = None

    async def stream():
        try:
            yield "an event"
            assert reader is not None
            reader.cancel()  # Stop, pressed just as the event was handed on
            await asyncio.Event().wait()
        finally:
            closed.set()

    async def read() -> None:
        async with contextlib.aclosing(merge({"refine": stream()}, tick=1.0)) as batches:
            async for _ in batches:
                pass

    reader = asyncio.create_task(read())
    try:
        await asyncio.wait({reader}, timeout=10)  # not `await reader`: that would cancel it
        assert reader.cancelled()
        assert closed.is_set()  # the stream was closed, so its HTTP response is too
    finally:
        reader.cancel()


# -- errors ------------------------------------------------------------------------------------


def test_no_key_is_one_readable_line_in_the_page(server, client):
    answer, chat, _, error, _ = predict(client, "q", *settings_args(key=""), api_name="/refine")
    assert error.startswith("**Error:** No API key")
    assert "\n" not in error and "Traceback" not in error
    assert chat == [] and not answer
    assert server.requests == []


def test_a_rate_limit_part_way_keeps_the_finished_turn(server, client):
    server.reply_with(None)
    server.enqueue(FIRST_TURN, Fault.status(429, headers={"retry-after": "3600"}))
    _, chat, summary, error, _ = predict(client, "q", *settings_args(), api_name="/refine")
    assert error.startswith("**Error:** Turn 2 failed: Rate limited")
    assert text(chat[0]) == FIRST_TURN
    assert chat_titles(chat) == ["Turn 1", "Turn 2 (failed)"]
    assert summary.startswith("Failed")


def test_an_unknown_model_names_it_and_lists_what_is_available(server, client):
    args = settings_args(model="llama-9-imaginary")
    _, _, _, error, _ = predict(client, "q", *args, api_name="/refine")
    assert "Model 'llama-9-imaginary' is not available here" in error
    assert "openai/gpt-oss-20b" in error


def test_a_provider_that_is_down_is_one_line(server, client):
    server.reply_with(lambda request: Fault.status(503))
    error = predict(client, "q", *settings_args(), api_name="/refine")[3]
    assert error.startswith("**Error:** Turn 1 failed:")
    assert "\n" not in error and "Traceback" not in error


def test_a_wrong_key_is_rejected_and_never_echoed(server, client):
    wrong = "wrong-key-0000"
    outputs = predict(client, "q", *settings_args(key=wrong), api_name="/refine")
    assert "**Error:**" in outputs[3]
    assert wrong not in json.dumps(outputs)


def test_an_empty_question_is_a_readable_error(server, client):
    _, _, _, error, _ = predict(client, "   ", *settings_args(), api_name="/refine")
    assert error == "**Error:** The question is empty."


# -- sessions ----------------------------------------------------------------------------------


def waits_for_company(count: int):
    """A handler that holds each turn 1 until `count` different questions are in flight."""
    questions: set[str] = set()

    async def handler(request: RecordedRequest) -> str:
        # Refine's turn 1: its sections in the system prompt, no earlier reply.
        if "## Reasoning" in (request.system or "") and len(request.messages) == 2:
            questions.add(question_of(request))
            for _ in range(500):
                if len(questions) >= count:
                    return f"## Answer\ntogether: {question_of(request)}"
                await asyncio.sleep(0.01)
            return "## Answer\nalone"
        if request.system is None:
            questions.add(f"single: {request.user}")
            for _ in range(500):
                if len(questions) >= count:
                    return f"together: {request.user}"
                await asyncio.sleep(0.01)
            return "alone"
        return refine_script(request)

    return handler


def test_two_browser_sessions_run_at_once_and_see_only_their_own_run(server, client, other):
    server.reply_with(waits_for_company(2))
    a = client.submit("question A", *settings_args(), turns=1, api_name="/refine")
    b = other.submit("question B", *settings_args(), turns=1, api_name="/refine")
    chat_a, chat_b = unwrap(a.result(timeout=30))[1], unwrap(b.result(timeout=30))[1]
    # Each session's Stop sees its own run only.
    stopped_b = predict(other, api_name="/stop_refine")[1]
    assert "together: question A" in text(chat_a[0])
    assert "together: question B" in text(chat_b[0])
    assert "question A" not in json.dumps(chat_b + stopped_b)


def test_a_key_typed_in_one_session_is_not_used_by_another(server, client, other):
    ok = predict(client, "q", *settings_args(), turns=1, api_name="/refine")
    refused = predict(other, "q", *settings_args(key=""), turns=1, api_name="/refine")
    assert ok[3] in (None, "") and ok[0].startswith("### There are 3")
    assert refused[3].startswith("**Error:** No API key")


# -- steps and compare -------------------------------------------------------------------------


def steps_script(request: RecordedRequest) -> str:
    if not request.json_mode:
        return "Forty-two."
    done = sum(1 for m in request.messages if m["role"] == "assistant") + 1
    return json.dumps(
        {
            "title": f"Title {done}",
            "content": f"Reasoning of step {done}.",
            "next_action": "final_answer" if done >= 3 else "continue",
        }
    )


def test_steps_tab_shows_each_step_with_its_title_and_time_then_the_answer(server, client):
    server.reply_with(steps_script)
    answer, chat, summary, error, _ = predict(client, "q", *settings_args(), api_name="/steps")
    assert chat_titles(chat) == ["Step 1: Title 1", "Step 2: Title 2", "Step 3: Title 3"]
    assert [text(m) for m in chat[:3]] == [f"Reasoning of step {i}." for i in (1, 2, 3)]
    assert all(m["metadata"]["duration"] >= 0 for m in chat)
    assert "3 steps · total thinking time" in summary
    assert answer == "Forty-two."
    assert not error


def test_compare_runs_the_chosen_modes_at_once_side_by_side(server, client):
    server.reply_with(waits_for_company(2))
    outputs = predict(
        client,
        "question C",
        ["single", "refine"],
        *settings_args(),
        refine_turns=1,
        api_name="/compare",
    )
    single, refine = outputs[0:4], outputs[4:8]
    badge, error = outputs[-2:]
    assert single[0] == "### Single answer" and refine[0] == "### Refine · 1 turn"
    assert single[1] == "together: question C"
    assert refine[1].startswith('### There are 3 r\'s in "strawberry".')
    for stats in (single[2], refine[2]):
        assert stats.startswith("Done · ") and "tokens" in stats
    assert badge == "≠ The answers differ (2 modes)"
    assert not error


def test_compare_with_no_mode_chosen_says_so(server, client):
    outputs = predict(client, "q", [], *settings_args(), api_name="/compare")
    assert outputs[-1] == "**Error:** choose at least one mode to compare."
    assert server.requests == []


def test_stop_on_compare_stops_every_column(server, client):
    server.reply_with(None)
    slow = Reply(" ".join(["word"] * 200), chunk_delay=0.05)
    server.enqueue(slow, slow)
    job = client.submit("q", ["single", "refine"], *settings_args(), api_name="/compare")
    wait_for(job, lambda o: "word" in (o[1] or "") and "word" in (o[5] or ""))
    job.cancel()
    outputs = predict(client, api_name="/stop_compare")
    assert outputs[2].startswith("Stopped") and outputs[6].startswith("Stopped")
    sent = len(server.requests)
    time.sleep(0.5)
    assert sent == len(server.requests) == 2


# -- launching ---------------------------------------------------------------------------------


def test_analytics_are_off():
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_ui_command_defaults_to_loopback_port_7860():
    command = cli.commands["ui"]
    params = {p.name: p for p in command.params}
    assert (params["host"].default, params["port"].default) == ("127.0.0.1", 7860)
    assert params["share"].is_flag  # sharing only when asked for


def test_ui_command_rejects_a_malformed_auth():
    result = CliRunner().invoke(cli, ["ui", "--auth", "nopassword"])
    assert result.exit_code == 2
    assert "--auth must be USER:PASSWORD" in result.output


def test_serving_beyond_this_machine_warns_and_a_busy_port_is_one_line():
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["ui", "--host", "0.0.0.0", "--port", str(port)])
    assert "warning: the UI will be open to every machine that can reach 0.0.0.0" in result.output
    assert "--auth USER:PASSWORD" in result.output
    assert result.exit_code == 1
    assert "Traceback" not in result.output


def test_python_m_llamaberry_ui_serves_the_page_on_loopback(fake):
    port = free_port()
    env = {**os.environ, "GROQ_BASE_URL": fake.groq_base_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "llamaberry_ui", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as page:
                    assert page.status == 200
                    assert "llamaberry" in page.read().decode()
                    break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "the app did not start within 60s"
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=10)


# -- settings ----------------------------------------------------------------------------------


def test_the_model_list_comes_from_the_endpoint_with_the_session_key(server, client):
    update = client.predict(KEY, "openai/gpt-oss-20b", api_name="/models")
    assert update["value"] == "openai/gpt-oss-20b"
    assert [c[0] if isinstance(c, list) else c for c in update["choices"]] == sorted(server.models)
    assert no_secret(update)


def test_without_a_model_list_the_model_box_stays_free_text(server, client):
    update = client.predict("", "my-own-model", api_name="/models")
    assert update["value"] == "my-own-model"
    assert "Could not list the endpoint's models (No API key" in update["info"]


def test_a_bad_option_gets_the_same_line_from_the_page_the_cli_the_api_and_the_environment(
    server, client, monkeypatch
):
    from llamaberry import Engine
    from llamaberry.core.errors import InputError

    line = "turns must be a whole number from 1 to 10 (got 11)."
    # What the page's turns control sends goes through refine's options model, not gradio's
    # own bounds check (which words it differently).
    page = predict(client, "q", *settings_args(), turns=11, api_name="/refine")[3]
    env = {"GROQ_API_KEY": KEY, "GROQ_BASE_URL": server.groq_base_url}
    command = CliRunner().invoke(cli, ["ask", "q", "--turns", "11"], env=env)
    with pytest.raises(InputError) as api:
        Engine(api_key=KEY, base_url=server.groq_base_url, history=False).stream(
            "refine", "q", turns=11
        )
    monkeypatch.setenv("LLAMABERRY_TURNS", "11")
    with pytest.raises(InputError) as environment:
        Engine(api_key=KEY, base_url=server.groq_base_url, history=False)
    assert page == f"**Error:** {line}"
    assert command.exit_code == 2 and command.stderr == f"error: {line}\n"
    assert str(api.value) == line
    assert str(environment.value) == f"{line} It comes from LLAMABERRY_TURNS."
    assert server.requests == []


# -- vote, drafts, and a mode the page has never heard of -------------------------------------


def voting(answers: list[str], spacing: float = 0.0):
    """The k-th sample to arrive answers `answers[k]`, `k * spacing` seconds late (so they
    come back one by one, in that order); anything else gets refine's replies."""
    seen: list[RecordedRequest] = []

    def handler(request: RecordedRequest) -> str | Reply:
        if "Answer: <your final answer>" not in (request.system or ""):
            return refine_script(request)
        seen.append(request)
        k = len(seen) - 1
        return Reply(f"Working it out, way {k + 1}.\n\nAnswer: {answers[k]}", latency=k * spacing)

    return handler


def test_vote_shows_every_sample_the_tally_and_the_agreement(server, client):
    server.reply_with(voting(["42", "41", "42", "forty-two", "41"], spacing=0.3))
    job = client.submit("Six times seven?", *settings_args(), samples=5, api_name="/vote")
    answer, chat, summary, error, details = unwrap(job.result(timeout=30))

    assert not error
    assert answer == "### 42"
    titles = chat_titles(chat)
    assert [t.split(" · ")[0] for t in titles] == [f"Sample {i}" for i in range(1, 6)]
    said = sorted(t.split(" · answer ")[1] for t in titles)
    assert said == ["41", "41", "42", "42", "forty-two (counted as 42)"]
    # Each sample's reasoning is there, folded.
    assert all(m["metadata"]["status"] == "done" and "Working it out" in text(m) for m in chat)
    assert "**Agreement 60%**: 3 of 5 answers are **42**, a majority, not a consensus." in details
    assert "| 42 ✓ | ●●● 3 |" in details and "| 41 | ●● 2 |" in details
    assert "Tie" not in details
    assert summary.startswith("Done · 5 samples · agreement 60% · ")
    # The tally was counted live, as the samples came back.
    counting = [o[4] for o in map(unwrap, job.outputs()) if "**Counting**" in (o[4] or "")]
    assert any("1 of 5 samples back" in c for c in counting)
    assert len(server.requests) == 5


def test_a_vote_tie_says_which_rule_settled_it(server, client):
    server.reply_with(voting(["41", "42"], spacing=1.5))
    answer, _, summary, _, details = predict(
        client, "q", *settings_args(), samples=2, api_name="/vote"
    )
    assert answer == "### 41"
    assert summary.startswith("Done · 2 samples · agreement 50% · ")
    assert "**Agreement 50%**: 1 of 2 answers are **41**, no majority" in details
    assert (
        "*Tie*: 41 and 42 have 1 vote each. The rule: the answer that reached 1 first wins, "
        "counting samples in the order they finished, so 41."
    ) in details


def drafting(request: RecordedRequest) -> str:
    """Drafts say which they are; the synthesis (given every draft) answers in its sections."""
    if "<draft" in (request.user or ""):
        return SYNTHESIS
    return f"A draft that counts the r's: 3. ({len(request.user or '')} characters asked)"


def test_drafts_shows_each_draft_folded_then_the_synthesis_as_the_answer(server, client):
    server.reply_with(drafting)
    answer, chat, summary, error, details = predict(
        client, "How many r in strawberry?", *settings_args(), drafts=2, api_name="/drafts"
    )
    assert not error and not details
    assert chat_titles(chat) == ["Draft 1", "Draft 2", "Synthesis"]
    assert all(m["metadata"]["status"] == "done" for m in chat)
    assert text(chat[0]).startswith("A draft that counts")
    assert answer == (
        '### There are 3 r\'s in "strawberry".\n\n'
        'The word "strawberry" contains the letter r three times.'
    )
    assert summary.startswith("Done · 2 drafts · ")
    synthesis = [r for r in server.requests if "<draft" in (r.user or "")]
    assert len(synthesis) == 1 and len(server.requests) == 3


@pytest.mark.parametrize("mode", ["vote", "drafts"])
def test_stop_closes_a_run_of_concurrent_calls_and_marks_each(server, client, mode):
    server.reply_with(None)
    # Slow, sparse pieces: still streaming at Stop, without redrawing the page so often that a
    # loaded machine cannot answer the cancel in time.
    server.reply_with(lambda request: Reply(" ".join(["word"] * 100), chunk_delay=0.2))
    options = {"samples": 2} if mode == "vote" else {"drafts": 2}
    job = client.submit("q", *settings_args(), api_name=f"/{mode}", **options)
    wait_for(job, lambda o: len(o[1]) == 2 and all("word" in text(m) for m in o[1]))

    job.cancel()
    answer, chat, summary, error, _ = predict(client, api_name=f"/stop_{mode}")

    assert summary.startswith("Stopped")
    assert [t.endswith("(stopped)") for t in chat_titles(chat)] == [True, True]
    assert not answer and not error
    sent = len(server.requests)
    time.sleep(0.5)
    assert sent == len(server.requests) == 2  # no synthesis, nothing after Stop


def test_compare_runs_vote_and_drafts_with_the_options_of_their_tabs(server, client):
    from llamaberry import modes

    def handler(request: RecordedRequest) -> str | Reply:
        if "Answer: <your final answer>" in (request.system or ""):
            return "So.\n\nAnswer: 3"
        return drafting(request)

    server.reply_with(handler)
    outputs = predict(
        client,
        "How many r in strawberry?",
        ["vote", "drafts"],
        *settings_args(),
        vote_samples=3,
        drafts_drafts=2,
        api_name="/compare",
    )
    card = {mode: outputs[4 * i : 4 * i + 4] for i, mode in enumerate(modes.names())}
    assert card["vote"][0] == "### Vote · 3 samples"
    assert card["drafts"][0] == "### Drafts · 2 drafts"
    assert card["vote"][1] == "### 3"
    assert "**Agreement 100%**" in card["vote"][3]  # the tally heads its reasoning
    assert card["drafts"][1].startswith('### There are 3 r\'s in "strawberry".')
    assert outputs[-2] == "✓ The 2 answers agree"
    assert len(server.requests) == 3 + 2 + 1


def test_a_bad_option_on_any_tab_is_the_options_model_s_one_line(server, client):
    error = predict(client, "q", *settings_args(), samples=0, api_name="/vote")[3]
    assert error == "**Error:** samples must be a whole number from 1 to 20 (got 0)."
    error = predict(client, "q", *settings_args(), min_steps=30, api_name="/steps")[3]
    assert error == "**Error:** min_steps (30) is larger than max_steps (25)."
    outputs = predict(
        client, "q", ["drafts"], *settings_args(), drafts_drafts=11, api_name="/compare"
    )
    assert outputs[-1] == "**Error:** drafts must be a whole number from 1 to 10 (got 11)."
    assert server.requests == []


class EchoOptions(Options):
    """A mode made up for this test: the question echoed back a few times."""

    repeats: int = Field(2, ge=1, le=4, description="How many times the model is asked.")


class Echo(CallResult):
    # A call says its own kind: a reopened run's sections are titled by it.
    kind: ClassVar[str] = "echo"

    index: int


class EchoResult(ModeResult):
    mode: Literal["echo"] = "echo"
    echoes: list[Echo] = Field(default_factory=list)


async def echo(ctx: RunContext, options: EchoOptions):
    """Ask the question `repeats` times, one after another; the last reply is the answer."""
    for index in range(1, options.repeats + 1):
        messages = to_messages([("user", ctx.run.question)])
        async for event in ctx.call("echo", index, messages):
            yield event
        reply = ctx.reply
        done = Echo(index=index, content=reply.text, usage=reply.usage, seconds=reply.seconds)
        ctx.result.echoes.append(done)
        yield CallFinished(kind="echo", index=index, result=done)
    ctx.run.answer = ctx.result.echoes[-1].content


def test_a_mode_added_to_the_registry_gets_a_tab_runs_and_is_compared_and_kept(
    fake, monkeypatch, tmp_path
):
    from llamaberry_ui.history import history_rows, open_run

    from llamaberry import modes
    from llamaberry.store import Store

    spec = ModeSpec("echo", "The question, echoed.", EchoOptions, echo, EchoResult, default=False)
    monkeypatch.setitem(modes.MODES, "echo", spec)
    fake.reset()
    fake.reply_with(lambda request: f"echo of {request.user}")
    store = Store(tmp_path / "history.db")
    app = build_app(Settings(base_url=fake.groq_base_url, max_retries=0), history=store)
    tabs = {b.label: b for b in app.blocks.values() if isinstance(b, gr.Tab)}
    assert "Echo" in tabs
    # It comes after the registry's other modes, before Compare, in a tab bar that wraps rather
    # than hiding tabs behind a menu (the phone browser test checks every tab is in sight).
    assert list(tabs).index("Echo") == list(tabs).index("Compare") - 1
    bar = next(b for b in app.blocks.values() if isinstance(b, gr.Tabs))
    assert bar.overflow_behavior == "wrap"
    # Its options fold is drawn from its options model, titled with the values a run will use.
    folded = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "echo-options")
    assert folded.label == "Options · repeats 2"
    slider = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "echo-repeats")
    assert (slider.minimum, slider.maximum, slider.value) == (1, 4, 2)
    port = free_port()
    serve(app, host="127.0.0.1", port=port, block=False, quiet=True)
    try:
        with contextlib.closing(Client(f"http://127.0.0.1:{port}/", verbose=False)) as page:
            answer, chat, summary, error, details = predict(
                page, "hello", *settings_args(), repeats=3, api_name="/echo"
            )
            bad = predict(page, "hello", *settings_args(), repeats=9, api_name="/echo")[3]
            compared = predict(
                page, "hello", ["single", "echo"], *settings_args(), api_name="/compare"
            )
    finally:
        app.close()
    # The generic view: the answer, one section per call titled by its kind, the cost.
    assert not error and not details
    assert answer == "echo of hello"
    assert chat_titles(chat) == ["Echo 1", "Echo 2", "Echo 3"]
    assert all(text(m) == "echo of hello" for m in chat)
    assert summary.startswith("Done · ") and "tokens" in summary
    assert bad == "**Error:** repeats must be a whole number from 1 to 4 (got 9)."
    echo_card = compared[4 * modes.names().index("echo") :][:4]
    assert echo_card[0] == "### Echo" and echo_card[1] == "echo of hello"
    # The history lists it and reopens it in the same view.
    store.flush()
    rows = [row for row in history_rows(store, mode="echo") if row[4] == "ok"]
    assert len(rows) == 2
    view, why = open_run(store, rows[0][0])
    assert view is not None and not why
    # The newest is compare's, at the tab's default of 2 repeats.
    assert [m["metadata"]["title"] for m in view.messages()] == ["Echo 1", "Echo 2"]
    assert view.answer_markdown() == "echo of hello"


# -- reflect -------------------------------------------------------------------------------------

CHAIN = """<step>The word is s-t-r-a-w-b-e-r-r-y.</step>
<step>The r's are at positions 3, 8 and 9.</step>
<reflection>Spelling it out makes the count reliable.</reflection>
<reward>0.6</reward>
<step>Three positions, so three r's.</step>
<answer>3</answer>
<reflection>Checked letter by letter; confident.</reflection>
<reward>0.9</reward>"""


def test_reflect_shows_each_step_with_its_reward_and_reflection_then_the_answer(server, client):
    server.reply_with(None)
    server.enqueue(Reply(CHAIN, chunk_delay=0.02, chunk_words=2))
    job = client.submit(
        "How many r's in strawberry?",
        *settings_args(),
        step_budget=6,
        reflect_every=2,
        api_name="/reflect",
    )
    answer, chat, summary, error, details = unwrap(job.result(timeout=30))

    assert not error
    assert answer == "3"
    assert chat_titles(chat) == [
        "Step 1",
        "Step 2 · ▰▰▰▰▰▰▱▱▱▱ reward 0.60 · adjust",
        "Step 3",
    ]
    # Steps stay open, each with its text; a reflection sits under the step it follows.
    assert all("status" not in m["metadata"] for m in chat)
    assert text(chat[1]) == (
        "The r's are at positions 3, 8 and 9.\n\n"
        "> **Reflection:** Spelling it out makes the count reliable."
    )
    assert "**Rewards**, the model's own score of its progress (0 to 1): 0.60 → 0.90 (answer)" in (
        details
    )
    assert (
        "**Final reflection** ▰▰▰▰▰▰▰▰▰▱ reward 0.90 · go on: Checked letter by letter; confident."
    ) in details
    assert summary.startswith("Done · 3 steps · last reward 0.90 · ")
    # The steps came one by one as the chain streamed, not all at the end.
    seen = {len(o[1]) for o in map(unwrap, job.outputs()) if o[1]}
    assert {1, 2, 3} <= seen


def test_reflect_says_when_its_step_budget_stopped_it(server, client):
    server.reply_with(None)
    runaway = "".join(f"<step>Thinking about it, round {n}.</step>\n" for n in range(1, 40))
    closing = "<answer>3</answer><reflection>Ran long.</reflection><reward>0.4</reward>"
    server.enqueue(Reply(runaway, chunk_delay=0.005, chunk_words=2), closing)
    answer, chat, summary, error, details = predict(
        client, "q", *settings_args(), step_budget=3, api_name="/reflect"
    )
    assert not error and answer == "3"
    assert chat_titles(chat) == ["Step 1", "Step 2", "Step 3"]
    assert summary.startswith("Done · 3 steps · last reward 0.40 · ")
    assert (
        "*The chain went past its budget of 3 steps, so it was stopped after step 3 "
        "(the Step budget option).*"
    ) in details
    assert "**Final reflection** ▰▰▰▰▱▱▱▱▱▱ reward 0.40 · go back: Ran long." in details
    assert len(server.requests) == 2


def test_stop_ends_a_reflect_chain_and_keeps_its_finished_steps(server, client):
    server.reply_with(None)
    runaway = "".join(f"<step>Thinking about it, round {n}.</step>\n" for n in range(1, 40))
    server.enqueue(Reply(runaway, chunk_delay=0.05, chunk_words=2))
    job = client.submit("q", *settings_args(), step_budget=30, api_name="/reflect")
    wait_for(job, lambda o: len(o[1]) >= 3)

    job.cancel()
    _, chat, summary, error, _ = predict(client, api_name="/stop_reflect")

    assert summary.startswith("Stopped") and not error
    titles = chat_titles(chat)
    assert titles[:2] == ["Step 1", "Step 2"]
    assert text(chat[0]) == "Thinking about it, round 1."
    # Nothing is left spinning: a step that was being written is marked stopped.
    assert all(m["metadata"].get("status") != "pending" for m in chat)
    assert all(t.startswith("Step ") for t in titles)
    time.sleep(0.5)
    assert len(server.requests) == 1  # no closing call after Stop
