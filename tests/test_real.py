"""The real-model tier: every mode through llama.cpp serving the embedded SmolLM2-135M-Instruct.

These tests start the `local` provider (one server for the session, the `local_model` fixture of
our pytest plugin) and go through the same OpenAI-compatible client a user of Ollama, vLLM or
llama.cpp's own server would. They assert behaviour (structure, usage, errors, streaming,
cancelling), never what the tiny model answers. Budgets are small so the tier stays short on
two cores. Select it with `-m real`, or leave it out with `-m "not real"`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket

import httpx
import pytest
from click.testing import CliRunner

from llamaberry import ContextTooLongError, Engine, RunFailedError
from llamaberry.cli import cli
from llamaberry.core.events import CallFinished, RunFinished, TextDelta
from llamaberry.core.results import Message
from llamaberry.providers.local import EMBEDDED_MODEL, LocalServer
from llamaberry.testing import FakeServer

pytestmark = pytest.mark.real

QUESTION = "What is 2 + 2?"


@pytest.fixture
async def engine(local_model: LocalServer):
    """An engine on the embedded model with a small budget, sharing the session's server."""
    async with Engine(provider="local", max_tokens=48, history=False) as built:
        await built.client.ready()  # what a run does first: join the session's server
        assert built.client.server is local_model  # type: ignore[attr-defined]
        yield built


def server_json(server: LocalServer, method: str, path: str, body: object = None) -> object:
    """Ask llama.cpp's own endpoints (not the OpenAI-compatible ones) directly."""
    response = httpx.request(method, server.base_url + path, json=body, timeout=60)
    response.raise_for_status()
    return response.json()


def busy_slots(server: LocalServer) -> int:
    """How many of the server's slots are generating right now."""
    slots = server_json(server, "GET", "/slots")
    assert isinstance(slots, list)
    return sum(1 for slot in slots if slot.get("is_processing"))


async def test_refine_runs_three_turns_and_a_synthesis(engine: Engine):
    run = await engine.refine(QUESTION, turns=3)
    assert run.status == "ok" and run.provider == "local" and run.model == EMBEDDED_MODEL
    assert [t.index for t in run.result.turns] == [1, 2, 3]
    assert run.result.synthesis is not None and run.answer
    assert [(c.kind, c.index) for c in run.calls] == [
        ("turn", 1),
        ("turn", 2),
        ("turn", 3),
        ("synthesis", 1),
    ]
    # Each later call is given every earlier turn verbatim (as the model's own earlier reply,
    # in one growing conversation).
    for turn, call in ((0, 1), (1, 3)):
        earlier = run.calls[call].messages[:-1]
        assert any(run.result.turns[turn].content.strip() in m.content for m in earlier)
    # llama.cpp closes the connection after each streamed reply; no call may need a second try.
    assert all(c.attempts == 1 for c in run.calls)


async def test_each_call_of_a_run_reads_the_run_s_earlier_calls_back_from_llama_cpp_s_cache(
    engine: Engine,
):
    # Each later call of a refine run begins with the run's previous request, and llama.cpp
    # reads at least that much back from the slot that holds it (`timings.cache_n`) instead of
    # evaluating it again. The server has two slots: one that handed each call to the slot
    # used least recently would send every other call to the slot without this run's prefix.
    # A second run, on another question, then finds its own prefix the same way.
    for question in ("What is 2 + 2?", "Which is larger, 9.11 or 9.9?"):
        run = await engine.refine(question, turns=2)
        assert run.status == "ok", run.error
        prompts = [c.usage.prompt_tokens for c in run.calls]
        cached = [c.usage.cached_tokens for c in run.calls]
        assert all(cached[i] >= prompts[i - 1] for i in range(1, len(prompts))), (
            prompts,
            cached,
        )
        assert run.usage.cached_tokens == sum(cached)


async def test_single_streams_deltas_before_the_call_ends(engine: Engine):
    before_finish: list[str] = []
    finished = None
    async for event in engine.single_stream("Describe the sea in one paragraph."):
        if isinstance(event, TextDelta) and finished is None:
            before_finish.append(event.text)
        elif isinstance(event, CallFinished):
            finished = event
        elif isinstance(event, RunFinished):
            run = event.run
    assert finished is not None and run.status == "ok"
    assert len(before_finish) > 1  # token by token, not one block at the end
    assert "".join(before_finish) == run.calls[0].reply


async def test_usage_is_the_servers_own_count(engine: Engine, local_model: LocalServer):
    messages = [Message(role="user", content="Tell me a long story about a lighthouse keeper.")]
    reply = await engine.client.complete(messages, max_tokens=16)
    assert reply.finish_reason == "length"
    # The budget was spent exactly, and the prompt is what llama.cpp's tokenizer counts after
    # its chat template: figures only the server can know, where our estimate would differ.
    assert reply.usage.completion_tokens == 16
    prompt = server_json(
        local_model, "POST", "/apply-template", {"messages": [m.model_dump() for m in messages]}
    )
    assert isinstance(prompt, dict)
    tokens = server_json(
        local_model, "POST", "/tokenize", {"content": prompt["prompt"], "add_special": True}
    )
    assert isinstance(tokens, dict)
    assert reply.usage.prompt_tokens == len(tokens["tokens"])
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 16


async def test_steps_go_through_llama_cpp_json_mode_with_validation(local_model: LocalServer):
    async with Engine(provider="local", max_tokens=96, history=False) as engine:
        try:
            run = await engine.steps(QUESTION, min_steps=1, max_steps=2)
        except RunFailedError as error:  # the tiny model may never produce a valid step
            run = error.run
            assert "not a valid step after" in (run.error or "")
    step_calls = [c for c in run.calls if c.kind == "step"]
    assert step_calls
    for call in step_calls:
        # llama.cpp's grammar holds a JSON-mode reply to JSON: only a cut-off one can be broken.
        if call.finish_reason == "stop":
            assert isinstance(json.loads(call.reply), dict)
    # Every step that was kept passed validation; a rejected reply was shown back on re-ask.
    for step in run.result.steps:
        assert step.title and step.content and step.next_action in ("continue", "final_answer")
    for earlier, later in itertools.pairwise(step_calls):
        if later.index == earlier.index:  # a re-ask of the same step
            assert later.messages[-1].role == "user"
            assert f"step {earlier.index}" in later.messages[-1].content.lower()
    if run.status == "ok":
        assert run.result.final is not None and run.answer
        assert run.calls[-1].kind == "answer"


async def test_compare_runs_the_modes_side_by_side(local_model: LocalServer):
    async with Engine(provider="local", max_tokens=32, turns=1, history=False) as engine:
        result = await engine.compare(QUESTION, ("single", "refine"))
    labels = [entry.label for entry in result.entries]
    assert "single" in labels and "refine" in labels
    for entry in result.entries:
        assert entry.status == "ok", entry.error
        assert entry.usage.total_tokens > 0


def test_embedded_default_eval_scores_a_small_dataset(local_model: LocalServer, tmp_path):
    data = tmp_path / "tiny.jsonl"
    data.write_text(
        '{"question": "What is 2 + 2?", "answer": "4"}\n'
        '{"question": "What is the capital of France?", "answer": "Paris"}\n'
    )
    result = CliRunner().invoke(
        cli,
        ["eval", str(data), "--modes", "single", "--max-tokens", "24", "-o", str(tmp_path / "out")],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "embedded SmolLM2-135M-Instruct" in result.stderr
    rows = [
        json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 2
    assert all(row["status"] == "ok" and row["correct"] in (True, False) for row in rows)


def test_embedded_default_ask_says_so_and_json_names_provider_and_model(local_model: LocalServer):
    result = CliRunner().invoke(
        cli, ["ask", QUESTION, "--turns", "1", "--max-tokens", "24", "--json"]
    )
    assert result.exit_code == 0, result.output
    notice = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(notice) == 1 and "GROQ_API_KEY" in notice[0] and EMBEDDED_MODEL in notice[0]
    data = json.loads(result.stdout)
    assert data["provider"] == "local" and data["model"] == EMBEDDED_MODEL
    assert data["status"] == "ok" and data["result"]["synthesis"] is not None


async def test_models_lists_the_served_model(engine: Engine):
    assert await engine.models() == [EMBEDDED_MODEL]


async def test_a_prompt_beyond_the_context_window_is_context_too_long(engine: Engine):
    # About 10K tokens: more than one slot's 8K, well under the question-length limit's reach.
    too_long = "apple " * 10000
    with pytest.raises(ContextTooLongError) as caught:
        await engine.client.complete([Message(role="user", content=too_long)])
    assert caught.value.status_code == 400
    assert "context window" in str(caught.value)


async def test_cancelling_mid_stream_stops_generation_and_a_new_run_starts(
    local_model: LocalServer,
):
    async with Engine(provider="local", max_tokens=2000, history=False) as engine:
        deltas = 0
        stream = engine.single_stream("Write a very long story about a dragon and a city.")
        async for event in stream:
            if isinstance(event, TextDelta):
                deltas += 1
                if deltas == 3:
                    break
        await stream.aclose()  # type: ignore[attr-defined]
        # The server notices the closed connection and frees the slot long before 2000 tokens.
        for _ in range(300):
            if busy_slots(local_model) == 0:
                break
            await asyncio.sleep(0.1)
        assert busy_slots(local_model) == 0
        run = await engine.single(QUESTION)
    assert run.status == "ok" and run.calls[0].usage.completion_tokens > 0


def test_the_web_ui_on_the_embedded_model_shows_a_banner(local_model: LocalServer):
    from llamaberry_ui.app import build_app

    from llamaberry.core.settings import Settings

    users = local_model._users
    app = build_app(Settings.load(), history=False)
    # The page holds the shared server up between its runs (its row runs in this process).
    assert local_model._users == users + 1
    banners = [
        block.value
        for block in app.blocks.values()
        if getattr(block, "elem_id", None) == "embedded-banner"
    ]
    assert len(banners) == 1
    assert EMBEDDED_MODEL in banners[0] and "GROQ_API_KEY" in banners[0]


# -- the fake, played against the real thing ----------------------------------------------------


def _events(raw: bytes) -> list[object]:
    """An SSE body as its data payloads (JSON objects, or the "[DONE]" marker)."""
    events: list[object] = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block  # one data line per event, nothing else
        data = block[len("data: ") :]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def _closes_after_stream(host: str, port: int, body: bytes) -> bool:
    """Whether the server closes a connection right after a streamed reply on it."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        received = b""
        sock.settimeout(5)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return False  # still open 5 s after the reply
        return b"data: [DONE]" in received


def _observe(base: str) -> dict[str, object]:
    """What a client sees of a llama.cpp-like server, field names and framing, not values."""
    seen: dict[str, object] = {}
    # No connection is kept: both close one after each streamed reply (see the last check).
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=base, timeout=120, limits=no_reuse) as http:
        models = http.get("/v1/models").json()
        seen["models"] = (sorted(models), sorted(models["data"][0]), models["data"][0]["id"])
        seen["models_n_ctx"] = models["data"][0]["meta"]["n_ctx"]
        props = http.get("/props").json()
        seen["props"] = (props["default_generation_settings"]["n_ctx"], props["total_slots"])
        seen["health"] = http.get("/health").json()
        missing = http.get("/v1/nothing")
        seen["unknown_url"] = (missing.status_code, missing.json())

        hello = [{"role": "user", "content": "Say hi."}]
        whole = http.post(
            "/v1/chat/completions",
            json={"model": "no-such-model", "messages": hello, "max_tokens": 4},
        )
        payload = whole.json()
        seen["any_model"] = (whole.status_code, payload["model"])
        seen["completion"] = (
            sorted(payload),
            sorted(payload["choices"][0]),
            sorted(payload["choices"][0]["message"]),
            sorted(payload["usage"]),
            sorted(payload["usage"]["prompt_tokens_details"]),
        )
        seen["timing_names"] = set(payload["timings"])

        too_long = http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "apple " * 10000}]},
        )
        error = too_long.json()["error"]
        seen["overflow"] = (
            too_long.status_code,
            too_long.headers.get("connection"),
            sorted(error),
            error["type"],
            error["code"],
            bool(
                re.fullmatch(
                    r"request \(\d+ tokens\) exceeds the available context size \(\d+ tokens\), "
                    r"try increasing it",
                    error["message"],
                )
            ),
        )

        json_mode = http.post(
            "/v1/chat/completions",
            json={
                "model": "m",
                "messages": [{"role": "user", "content": "A JSON object with a title."}],
                "max_tokens": 3,  # cut off mid-object: still a 200, never json_validate_failed
                "response_format": {"type": "json_object"},
            },
        )
        seen["json_mode_status"] = json_mode.status_code

        for with_usage in (True, False):
            # A prompt of its own: llama.cpp leaves out the role chunk when the whole prompt
            # is already in a slot's cache (seen when the same question came just before).
            question = [{"role": "user", "content": f"Say hi to {with_usage}."}]
            body: dict[str, object] = {"model": "m", "messages": question, "max_tokens": 3}
            body["stream"] = True
            if with_usage:
                body["stream_options"] = {"include_usage": True}
            events = _events(http.post("/v1/chat/completions", json=body).content)
            assert events[-1] == "[DONE]"
            chunks = [e for e in events[:-1] if isinstance(e, dict)]
            first, finishing = (
                chunks[0],
                next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]),
            )
            seen[f"stream_{with_usage}"] = (
                first["choices"][0]["delta"],
                sorted(first),
                sorted(first["choices"][0]),
                finishing["choices"][0]["delta"],
                "timings" in finishing,
                [sorted(c) for c in chunks if not c["choices"]],
            )
    host, port = base.removeprefix("http://").split(":")
    stream_body = json.dumps(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Hi."}],
            "max_tokens": 2,
            "stream": True,
        }
    ).encode()
    seen["closes_after_stream"] = _closes_after_stream(host, int(port), stream_body)
    return seen


def test_the_fake_plays_llama_cpp_the_way_the_real_server_does(local_model: LocalServer):
    with FakeServer(
        flavor="llamacpp",
        served_model=EMBEDDED_MODEL,
        max_context=local_model.context,
        slots=local_model.slots,
    ) as fake:
        played = _observe(f"http://127.0.0.1:{fake.port}")
    real = _observe(local_model.base_url)
    # llama.cpp now and then opens a stream with text instead of a role chunk (difference 10
    # in the notes: it even happened on a prompt of its own); that first delta then says
    # nothing about the fake, so only that one element is left out of the comparison.
    for key in ("stream_True", "stream_False"):
        if "role" not in real[key][0]:  # type: ignore[index]
            real[key] = real[key][1:]  # type: ignore[index]
            played[key] = played[key][1:]  # type: ignore[index]
    # The fake names only timings the real server sends (it leaves some out).
    assert played.pop("timing_names") <= real.pop("timing_names")  # type: ignore[operator]
    assert played == real


# Our own wording and tags: never part of an answer.
ECHO = re.compile(
    r"</?(?:question|turn)\b|reasoning turn\(s\) (?:on the question are )?above"
    r"|review (?:the earlier attempts at the question|your turns 1 to \d+ above)"
    r"|^\s*Final review:"
    # Halves of our later instructions it splices together ("Change the earlier answer only if
    # your reasoning proves nothing.", "The final answer, with the detail the question calls for.")
    r"|change the earlier answer only|the detail the question calls for|sentences at most"
    r"|stated plainly, in any format",
    re.IGNORECASE | re.MULTILINE,
)


async def test_no_answer_of_the_small_model_is_our_prompt_written_back(local_model: LocalServer):
    # SmolLM2 writes back the instructions it was given ("Final review: weigh your 3 reasoning
    # turn(s)...", and tags in earlier prompts): the run's answer is its own words, or the
    # best turn's. It also splices halves of our instructions into an "answer" of no sentence
    # of ours whole: that is read as our wording too.
    async with Engine(provider="local", temperature=0, history=False) as engine:
        for question in ("How many r are in strawberry?", "Which is larger, 9.11 or 9.9?"):
            run = await engine.refine(question)
            assert run.status == "ok" and run.answer
            assert not ECHO.search(run.answer), run.answer
            assert all(not ECHO.search(turn.answer) for turn in run.result.turns)
