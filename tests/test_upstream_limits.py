"""What an upstream's rate-limit headers may make us do, and what its error text may show: a
limit that resets beyond the call's timeout fails the call at once with the reset time (it slept
the whole hour, silently, and held every later call behind it); absurd retry-after values are
clamped (`inf` was an OverflowError traceback); a key is blanked before an error line is cut,
and basic-auth credentials echoed back as base64 are blanked too."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

from llamaberry.core.errors import ProviderError, RateLimitError
from llamaberry.core.redact import REDACTED, redact
from llamaberry.core.results import Message
from llamaberry.providers.groq import GroqClient
from llamaberry.providers.limits import MAX_RESET, parse_duration
from llamaberry.providers.openai import OpenAICompatibleClient
from llamaberry.providers.retries import RetryPolicy
from llamaberry.testing import FakeServer, Fault, Reply

KEY = "gsk_straddling_key_0123456789abcdef"
MODEL = "llama-3.1-8b-instant"


def client_for(server: FakeServer, provider: str, **options):
    options = {"model": MODEL, "retry": RetryPolicy(max_retries=1, base_delay=0.01), **options}
    if provider == "groq":
        return GroqClient(api_key=KEY, base_url=server.groq_base_url, **options)
    return OpenAICompatibleClient(api_key=KEY, base_url=server.openai_base_url, **options)


async def ask(client, text: str = "q"):
    items = [item async for item in client.stream([Message(role="user", content=text)])]
    return items[-1]


NONE_LEFT_FOR_AN_HOUR = {
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "1h",
    "x-ratelimit-remaining-tokens": "5000",
    "x-ratelimit-reset-tokens": "1s",
}


async def test_a_limit_that_resets_beyond_the_timeout_fails_every_later_call_at_once(
    server: FakeServer, provider: str
):
    server.enqueue(Reply("first", headers=NONE_LEFT_FOR_AN_HOUR))
    client = client_for(server, provider, timeout=5.0)
    first = await ask(client)
    started = time.monotonic()
    # Several at once, as serve's requests for one model: none waits, none holds the others.
    results = await asyncio.gather(
        *(ask(client, f"q{i}") for i in range(5)), return_exceptions=True
    )
    waited = time.monotonic() - started
    await client.aclose()
    assert first.text == "first"
    assert waited < 2
    assert all(isinstance(r, RateLimitError) for r in results), results
    line = str(results[0])
    assert "resets in 59m5" in line or "resets in 1h00m" in line, line
    assert "5s timeout" in line
    assert len(server.requests) == 1  # nothing else was sent


async def test_a_limit_that_resets_within_the_timeout_is_still_waited_for(server: FakeServer):
    headers = {**NONE_LEFT_FOR_AN_HOUR, "x-ratelimit-reset-requests": "300ms"}
    server.enqueue(Reply("first", headers=headers))
    client = client_for(server, "groq", timeout=5.0)
    await ask(client)
    second = await ask(client, "second")
    await client.aclose()
    assert second.text == "echo: second"


@pytest.mark.parametrize("value", ["inf", "Infinity", "1e999", "99999999999999", "1e308"])
async def test_an_absurd_retry_after_is_clamped_and_fails_at_once_in_one_line(
    server: FakeServer, provider: str, value: str
):
    server.enqueue(Fault.status(429, headers={"retry-after": value}))
    client = client_for(server, provider)
    started = time.monotonic()
    with pytest.raises(RateLimitError) as failure:
        await ask(client)
    await client.aclose()
    assert time.monotonic() - started < 5
    assert failure.value.reset_in == MAX_RESET
    assert "resets in 24h00m" in str(failure.value)


def test_durations_that_are_not_numbers_or_are_negative_are_read_safely():
    assert parse_duration("nan") is None
    assert parse_duration("-5") == 0.0
    assert parse_duration("2m59.5s") == pytest.approx(179.5)
    assert parse_duration("inf") == MAX_RESET


async def test_a_key_straddling_the_cut_of_an_error_line_is_blanked_whole(
    server: FakeServer, provider: str
):
    # The message is cut to 300 characters; the key starts at 290 of them.
    message = "x" * 290 + " " + KEY + " was refused"
    server.enqueue(Fault.status(400, body={"error": {"message": message}}))
    client = client_for(server, provider)
    with pytest.raises(ProviderError) as failure:
        await ask(client)
    await client.aclose()
    line = str(failure.value)
    assert KEY[:6] not in line and REDACTED[:5] in line


async def test_base_url_credentials_echoed_back_as_basic_auth_are_blanked(
    server: FakeServer, provider: str
):
    pair = "gateway-user:gateway-secret-0042"
    token = base64.b64encode(pair.encode()).decode()
    server.enqueue(
        Fault.status(403, body={"error": {"message": f"denied for Authorization: Basic {token}"}})
    )
    base = server.groq_base_url if provider == "groq" else server.openai_base_url
    url = base.replace("://", f"://{pair}@")
    cls = GroqClient if provider == "groq" else OpenAICompatibleClient
    client = cls(
        api_key="k-basic-test", base_url=url, model=MODEL, retry=RetryPolicy(max_retries=0)
    )
    with pytest.raises(ProviderError) as failure:
        await ask(client)
    await client.aclose()
    assert server.requests[-1].headers["authorization"] == f"Basic {token}"
    line = str(failure.value)
    assert token not in line and "gateway-secret" not in line
    assert f"Basic {REDACTED}" in line


def test_basic_auth_anywhere_is_blanked_but_prose_about_basic_things_is_not():
    token = base64.b64encode(b"someone:hunter2hunter2").decode()
    assert redact(f"header basic {token} seen") == f"header basic {REDACTED} seen"
    prose = "The basic approach: basic arithmetic, Basic Instinct and BASIC programs."
    assert redact(prose) == prose
