"""Rate limits, faults and bad input: each fault has an expected outcome, and nothing is lost."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from llamaberry import (
    CallFinished,
    Engine,
    InputError,
    RateLimitError,
    RunFailedError,
    TextDelta,
    TextReset,
)
from llamaberry.providers.groq import GroqClient
from llamaberry.providers.limits import RateLimiter, parse_duration
from llamaberry.providers.openai import OpenAICompatibleClient
from llamaberry.providers.retries import RetryPolicy
from llamaberry.testing import FakeServer, Fault, Reply

from .conftest import FIRST_TURN, refine_script

FAST_RETRIES = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.05, max_wait=5.0)


def fast_engine(server: FakeServer, provider: str = "groq", **client_options) -> Engine:
    """An engine whose retries back off in milliseconds, so fault tests stay quick."""
    options = {"model": "openai/gpt-oss-120b", "retry": FAST_RETRIES, **client_options}
    client = (
        GroqClient(api_key="test-key", base_url=server.groq_base_url, **options)
        if provider == "groq"
        else OpenAICompatibleClient(api_key=None, base_url=server.openai_base_url, **options)
    )
    return Engine(client=client)


async def run_events(engine: Engine, question: str = "q", mode: str = "refine", **options):
    return [event async for event in engine.stream(mode, question, **options)]


# -- rate limits ------------------------------------------------------------------------------


async def test_429_with_a_short_retry_after_waits_and_succeeds(server: FakeServer, provider):
    server.enqueue(Fault.status(429, headers={"retry-after": "1"}), "fine")
    async with fast_engine(server, provider) as engine:
        started = time.perf_counter()
        run = await engine.single("q")
    assert run.answer == "fine"
    assert time.perf_counter() - started >= 1.0
    assert len(server.requests) == 2
    assert run.calls[0].attempts == 2


async def test_429_with_a_long_retry_after_fails_at_once_naming_the_limit(server: FakeServer):
    body = {
        "error": {
            "message": "Rate limit reached for model `openai/gpt-oss-120b` on tokens per day "
            "(TPD): Limit 200000, Used 199500, Requested 900.",
            "type": "tokens",
            "code": "rate_limit_exceeded",
        }
    }
    server.enqueue(Fault.status(429, body, headers={"retry-after": "3600"}))
    async with fast_engine(server) as engine:
        started = time.perf_counter()
        with pytest.raises(RunFailedError) as failure:
            await engine.single("q")
    # "At once" against the hour it was told to wait: one request and no retry (a 1 s bound
    # flaked on a loaded 2-core machine without telling us anything more).
    assert time.perf_counter() - started < 30.0
    assert len(server.requests) == 1
    assert failure.value.run.error == (
        "Answer failed: Rate limited on tokens per day; it resets in 1h00m."
    )


async def test_a_retry_after_beyond_the_sdk_sixty_second_cap_is_still_honoured():
    # The SDK would replace a 90 s retry-after by a short backoff; our policy waits for it.
    client = GroqClient(api_key="k", model="m", retry=RetryPolicy(max_wait=120))
    error = client._translate(_status_error(429, {"retry-after": "90"}))
    assert isinstance(error, RateLimitError) and error.reset_in == 90
    assert client.retry.delay(error, attempt=1) == 90
    assert RetryPolicy(max_wait=60).delay(error, attempt=1) is None


async def test_rate_limit_headers_slow_the_next_request_before_a_429(server: FakeServer):
    arrivals: list[float] = []

    def script(request):
        arrivals.append(time.perf_counter())
        return Reply(
            "ok",
            headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "0.4s"},
        )

    server.reply_with(script)
    async with fast_engine(server) as engine:
        await engine.single("first")
        await engine.single("second")
    assert arrivals[1] - arrivals[0] >= 0.35
    assert server.rate_limited == 0


async def test_an_rpm_limit_is_shared_by_every_run_of_an_engine(server: FakeServer):
    arrivals: list[float] = []
    server.reply_with(lambda request: arrivals.append(time.perf_counter()) or "ok")
    # Three requests per second, six concurrent runs: the second three wait for the window.
    async with fast_engine(server, limiter=RateLimiter(rpm=3, period=1.0)) as engine:
        await engine.models()  # warm the client, so arrival times measure only the pacing
        runs = await asyncio.gather(*(engine.single(f"q{i}") for i in range(6)))
    assert all(r.ok for r in runs)
    arrivals.sort()
    assert arrivals[2] - arrivals[0] < 0.8
    assert arrivals[3] - arrivals[0] >= 0.95
    assert server.rate_limited == 0


async def test_a_tpm_budget_delays_a_call_that_would_overflow_it():
    limiter = RateLimiter(tpm=1000)
    await limiter.acquire(900)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(limiter.acquire(200), timeout=0.2)


def test_provider_durations_parse():
    assert parse_duration("7.66s") == pytest.approx(7.66)
    assert parse_duration("2m59.56s") == pytest.approx(179.56)
    assert parse_duration("120ms") == pytest.approx(0.12)
    assert parse_duration("1h2m") == pytest.approx(3720)
    assert parse_duration("30") == 30
    assert parse_duration("soon") is None


# -- server errors, drops and hangs ---------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retried_then_succeed(server: FakeServer, provider, status):
    server.enqueue(Fault.status(status), "recovered")
    async with fast_engine(server, provider) as engine:
        run = await engine.single("q")
    assert run.answer == "recovered"
    assert len(server.requests) == 2


async def test_persistent_server_errors_fail_with_one_line_after_the_retry_bound(server):
    server.reply_with(lambda request: Fault.status(503))
    async with fast_engine(server) as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.single("q")
    assert len(server.requests) == 1 + FAST_RETRIES.max_retries
    error = failure.value.run.error
    assert error.startswith("Answer failed: the groq endpoint at http://127.0.0.1")
    assert "HTTP 503" in error and "\n" not in error


async def test_a_stream_dropped_mid_reply_is_retried_and_the_partial_text_discarded(
    server: FakeServer, provider
):
    server.enqueue(Fault.drop_after(3, text="one two three four five six"), FIRST_TURN)
    async with fast_engine(server, provider) as engine:
        events = await run_events(engine, mode="single")
    deltas, text = [], ""
    for event in events:
        if isinstance(event, TextDelta):
            text += event.text
            deltas.append(event.text)
        elif isinstance(event, TextReset):
            text = ""
    run = events[-1].run
    assert any(isinstance(e, TextReset) for e in events)
    assert "".join(deltas).startswith("one two three ")  # the partial text did stream
    assert text == FIRST_TURN == run.answer  # and a consumer that honours the reset is clean
    assert run.calls[0].reply == FIRST_TURN
    assert run.calls[0].attempts == 2


async def test_a_dropped_connection_before_any_reply_is_retried(server: FakeServer, provider):
    server.enqueue(Fault.drop(), "after the drop")
    async with fast_engine(server, provider) as engine:
        run = await engine.single("q")
    assert run.answer == "after the drop"


async def test_a_truncated_reply_is_retried(server: FakeServer):
    server.enqueue(Fault.truncate(), "whole")
    async with fast_engine(server) as engine:
        run = await engine.single("q")
    assert run.answer == "whole"


async def test_a_server_that_never_answers_times_out_and_fails_cleanly(server: FakeServer):
    server.reply_with(lambda request: Fault.hang())
    async with fast_engine(server, timeout=0.3) as engine:
        started = time.perf_counter()
        with pytest.raises(RunFailedError) as failure:
            await engine.single("q")
    assert time.perf_counter() - started < 5
    assert "did not answer within 0.3s" in failure.value.run.error


# -- errors that are not retried --------------------------------------------------------------


async def test_a_bad_key_is_one_line_naming_the_variable(provider):
    async with FakeServer(api_key="the-right-key") as server:
        async with fast_engine(server, provider) as engine:
            with pytest.raises(RunFailedError) as failure:
                await engine.single("q")
        assert len(server.requests) == 1
    variable = "GROQ_API_KEY" if provider == "groq" else "OPENAI_API_KEY"
    assert failure.value.run.error == (
        f"Answer failed: {provider} rejected the API key (HTTP 401); check {variable}."
    )
    assert "the-right-key" not in failure.value.run.error and "test-key" not in str(failure.value)


async def test_an_unknown_model_lists_what_is_available(server: FakeServer):
    async with fast_engine(server, model="gpt-7") as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.single("q")
    error = failure.value.run.error
    assert "'gpt-7'" in error and "openai/gpt-oss-20b" in error


async def test_an_unknown_model_fails_fast_on_later_calls(server: FakeServer):
    async with fast_engine(server, model="gpt-7") as engine:
        for _ in range(2):
            with pytest.raises(RunFailedError):
                await engine.single("q")
    chat = [r for r in server.requests if r.path.endswith("/chat/completions")]
    assert len(chat) == 1  # the second run knew the model list and sent nothing


async def test_context_too_long_is_its_own_line(monkeypatch: pytest.MonkeyPatch):
    # With the check before sending off, the request goes out and the server refuses it.
    monkeypatch.setenv("LLAMABERRY_CONTEXT", "0")
    async with FakeServer(max_context=50) as server, fast_engine(server) as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.single("word " * 400)
    assert "context window" in failure.value.run.error
    assert len(server.requests) == 1


async def test_a_reply_cut_off_by_the_token_budget_is_marked_truncated(server: FakeServer):
    server.reply_with(lambda request: Reply(refine_script(request), finish_reason="length"))
    async with fast_engine(server) as engine:
        run = await engine.refine("q", turns=1)
    assert run.result.turns[0].truncated and run.result.synthesis.truncated


# -- partial work and cancellation ----------------------------------------------------------------


async def test_a_failed_run_keeps_what_finished_and_says_which_call_failed(server: FakeServer):
    finished = []
    server.enqueue(FIRST_TURN, FIRST_TURN, Fault.status(400, {"error": {"message": "nope"}}))
    client = GroqClient(api_key="k", base_url=server.groq_base_url, model="openai/gpt-oss-120b")
    async with Engine(client=client, on_finish=finished.append) as engine:
        events = await run_events(engine)
    run = events[-1].run
    assert run.status == "failed"
    assert [t.index for t in run.result.turns] == [1, 2]
    assert run.error.startswith("Turn 3 failed: groq refused the request (HTTP 400): nope")
    assert run.usage.total_tokens == sum(t.usage.total_tokens for t in run.result.turns)
    assert finished == [run]


async def test_cancelling_a_run_closes_the_stream_and_records_it_cancelled(server: FakeServer):
    finished = []
    server.reply_with(lambda request: Reply(FIRST_TURN * 20, chunk_delay=0.02))
    client = GroqClient(api_key="k", base_url=server.groq_base_url, model="openai/gpt-oss-120b")
    async with Engine(client=client, on_finish=finished.append) as engine:
        first_token = asyncio.Event()

        async def consume():
            async for event in engine.refine_stream("q"):
                if isinstance(event, TextDelta):
                    first_token.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first_token.wait(), 5)
        task.cancel()
        started = time.perf_counter()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The reply had about 24 s left to stream: a cancel that waited for it would take
        # that long. 5 s, not 0.5 s, so a loaded 2-core machine's scheduling is no failure.
        assert time.perf_counter() - started < 5
        await asyncio.sleep(0.2)
    assert server.requests[0].answered_at is None  # the reply was cut off, not sent in full
    assert len(server.requests) == 1  # no further calls were made
    assert [r.status for r in finished] == ["cancelled"]
    assert finished[0].calls[0].reply  # the partial text of the cancelled call is kept


async def test_abandoning_a_stream_part_way_ends_the_run_as_cancelled(server: FakeServer):
    finished = []
    server.reply_with(refine_script)
    client = GroqClient(api_key="k", base_url=server.groq_base_url, model="openai/gpt-oss-120b")
    async with Engine(client=client, on_finish=finished.append) as engine:
        stream = engine.refine_stream("q")
        async for event in stream:
            if isinstance(event, CallFinished):
                break
        await stream.aclose()
    assert finished[0].status == "cancelled"
    assert len(finished[0].result.turns) == 1


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("", "empty"),
        (" \n\t ", "empty"),
        ("x" * 20001, "20,001 characters"),
        ("bell\x07here", "control character (U+0007) at position 5"),
        ("nul\x00", "control character (U+0000)"),
        # Not text: no server could read it (a byte that was not UTF-8, or a cut emoji).
        ("half \ud83d of an emoji", "lone surrogate (U+D83D) at position 6"),
        ("\udcff", "lone surrogate (U+DCFF) at position 1"),
    ],
)
async def test_bad_questions_get_a_clear_error_and_send_nothing(server, engine, question, expected):
    with pytest.raises(InputError, match=re.escape(expected)):
        await engine.refine(question)
    assert server.requests == []


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"turns": 0}, "turns"),
        ({"turns": 11}, "turns"),
        ({"max_tokens": -5}, "max-tokens"),
        ({"temperature": 3.5}, "temperature"),
        ({"timeout": 0}, "timeout"),
        ({"reasoning_effort": "extreme"}, "reasoning-effort"),
    ],
)
def test_bad_settings_get_one_line_naming_the_setting(options, expected):
    with pytest.raises(InputError) as failure:
        Engine(api_key="k", **options)
    assert expected in str(failure.value)
    assert "\n" not in str(failure.value)


def test_a_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("LLAMABERRY_TURNS", "many")
    with pytest.raises(InputError, match="LLAMABERRY_TURNS"):
        Engine(api_key="k")


@pytest.mark.parametrize(
    "question",
    [
        "Combien de « r » dans fraise ? 🍓🍓",
        "כמה פעמים מופיעה האות ר במילה תות?",
        "كم مرة يظهر الحرف ر؟",
        "Fix this:\n```python\ndef f(x):\n\treturn x +\n```",
    ],
)
async def test_unicode_emoji_rtl_and_code_questions_reach_the_model_intact(
    server, engine, question
):
    server.enqueue("ok")
    run = await engine.single(question)
    assert server.requests[0].user == question.strip()
    assert run.question == question.strip()


# -- helpers ----------------------------------------------------------------------------------


def _status_error(status: int, headers: dict[str, str]):
    import groq
    import httpx

    request = httpx.Request("POST", "http://x/openai/v1/chat/completions")
    response = httpx.Response(status, headers=headers, request=request)
    return groq.RateLimitError("limited", response=response, body=None)


async def test_engines_given_one_limiter_pace_as_one(server: FakeServer):
    arrivals: list[float] = []
    server.reply_with(lambda request: arrivals.append(time.perf_counter()) or "ok")
    limiter = RateLimiter(rpm=2, period=1.0)
    async with (
        Engine(api_key="k", base_url=server.groq_base_url, limiter=limiter, history=False) as a,
        Engine(api_key="k", base_url=server.groq_base_url, limiter=limiter, history=False) as b,
    ):
        await asyncio.gather(a.models(), b.models())  # warm both clients first
        await asyncio.gather(a.single("1"), b.single("2"), a.single("3"))
    arrivals.sort()
    assert arrivals[2] - arrivals[0] >= 0.95


def _client_of(provider: str):
    if provider == "groq":
        return GroqClient(api_key="test-key", base_url="http://127.0.0.1:9/", model="m", timeout=7)
    return OpenAICompatibleClient(
        api_key=None, base_url="http://127.0.0.1:9/v1", model="m", timeout=7
    )


def _sdk_failures(provider: str):
    """A call's failures with no HTTP status, as each library raises them, and the line each
    must read as: the SDK's, its httpx module's (groq: httpx, openai: httpx2), aiohttp's."""
    import importlib

    import aiohttp

    sdk = importlib.import_module(provider)
    http = importlib.import_module("httpx" if provider == "groq" else "httpx2")
    request = http.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    where = "endpoint"  # its URL is named once its SDK client is built (not here)
    return [
        (sdk.APITimeoutError(request=request), "did not answer within 7s"),
        (sdk.APIConnectionError(request=request), f"Could not reach the {provider} {where}"),
        (http.ConnectTimeout("slow", request=request), f"Could not connect to the {provider}"),
        (http.ReadTimeout("slow", request=request), "did not answer within 7s"),
        (http.ReadError("reset", request=request), f"Could not reach the {provider} {where}"),
        (http.UnsupportedProtocol("ftp"), "the base URL is not usable"),
        (aiohttp.ClientPayloadError("cut"), f"Could not reach the {provider} {where}"),
        (aiohttp.ServerTimeoutError("slow"), "did not answer within 7s"),
        (ConnectionResetError(104, "reset"), f"Could not reach the {provider} {where}"),
    ]


async def test_a_failure_with_no_status_is_read_by_its_public_type(provider: str):
    client = _client_of(provider)
    for error, line in _sdk_failures(provider):
        translated = client._translate(error)
        assert line in str(translated), (type(error), str(translated))
        assert translated.status_code is None


async def test_a_failure_is_not_read_by_its_class_name(provider: str):
    # Named like a timeout and a connection error, but neither: no retry-worthy timeout line.
    class ConnectionTimeoutSetting(ValueError):
        pass

    translated = _client_of(provider)._translate(ConnectionTimeoutSetting("bad"))
    assert type(translated).__name__ == "ProviderUnavailableError"
    assert str(translated) == f"{provider}: ConnectionTimeoutSetting: bad"


async def test_a_refusal_is_read_from_the_sdks_status_error_by_its_status_code(provider: str):
    import importlib

    sdk = importlib.import_module(provider)
    http = importlib.import_module("httpx" if provider == "groq" else "httpx2")
    request = http.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    refused = sdk.APIStatusError(
        "busy", response=http.Response(503, request=request), body={"error": {"message": "busy"}}
    )
    translated = _client_of(provider)._translate(refused)
    assert translated.status_code == 503 and "failed with HTTP 503: busy" in str(translated)
