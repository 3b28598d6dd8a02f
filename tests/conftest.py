"""Shared fixtures: a fake server in the test's own loop and engines pointed at it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from llamaberry import Engine
from llamaberry.testing import FakeServer, RecordedRequest, Reply

FIRST_TURN = """## Reasoning
1. Spell the word: s-t-r-a-w-b-e-r-r-y.
**Explanation:** Writing it out avoids counting from memory.
2. Mark each r: positions 3, 8 and 9.
**Explanation:** Three positions hold the letter r.

## Answer
3"""

LATER_TURN = """## Critique
Turn {previous} counted correctly; I re-checked each letter.

## New Reasoning
1. Count again letter by letter.
**Explanation:** An independent recount confirms the earlier result.

## Updated Answer
3 (turn {index})"""

SYNTHESIS = """## Analysis of Turns
Every turn counted the letters one by one.

## Comparison
All turns agree and the recount holds.

## Final Reasoning
1. The word has r at positions 3, 8 and 9.
**Explanation:** Checked letter by letter.

## Comprehensive Final Answer
The word "strawberry" contains the letter r three times.

## Concise Answer
There are 3 r's in "strawberry"."""


def refine_script(request: RecordedRequest) -> str:
    """Answer each refine call with a well-formed reply for its section contract, which its
    last message (the call's own instruction) names."""
    asked = request.user or ""
    if "## Concise Answer" in asked:
        return SYNTHESIS
    if "## Critique" in asked:
        index = len(replies_in(request)) + 1
        return LATER_TURN.format(previous=index - 1, index=index)
    return FIRST_TURN


def replies_in(request: RecordedRequest) -> list[str]:
    """The earlier replies a request carries (its assistant messages), in order."""
    return [m.get("content") or "" for m in request.messages if m.get("role") == "assistant"]


def question_of(request: RecordedRequest) -> str:
    """The question a request asks: inside <question> tags where a mode puts it there, else
    its last user message (the single mode sends the bare question)."""
    found = re.search(r"<question>\n(.*?)\n</question>", said(request), re.DOTALL)
    return found.group(1) if found else request.user or ""


def said(request: RecordedRequest) -> str:
    """Everything a request says, every message's text one after another."""
    return "\n".join(str(m.get("content") or "") for m in request.messages)


def together(
    count: int, reply: Callable[[RecordedRequest, int], str | Reply]
) -> Callable[[RecordedRequest], Awaitable[str | Reply]]:
    """A fake-server handler for calls made at once: every request is held until `count` have
    arrived (or 10 s pass), so calls sent one after another could never all be in flight
    together; then the k-th to arrive (from 1) is answered `reply(request, k)`."""
    arrived = asyncio.Event()
    seen: list[RecordedRequest] = []

    async def handler(request: RecordedRequest) -> str | Reply:
        seen.append(request)
        k = len(seen)
        if k == count:
            arrived.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), 10)
        return reply(request, k)

    return handler


def sums(path: Path, items: int) -> Path:
    """Write a JSONL dataset of `items` sums ("What is i + i?", answer 2i); return its path."""
    path.write_text(
        "".join(
            json.dumps({"question": f"What is {i} + {i}?", "answer": 2 * i}) + "\n"
            for i in range(items)
        )
    )
    return path


@pytest.fixture
async def server():
    """A fake chat server running in the test's event loop."""
    async with FakeServer() as fake:
        yield fake


@pytest.fixture(params=["groq", "openai"])
def provider(request) -> str:
    """Run the test once through each provider's real SDK."""
    return request.param


@pytest.fixture
async def engine(server: FakeServer, provider: str):
    """An engine pointed at the fake server through `provider`'s SDK."""
    base_url = server.groq_base_url if provider == "groq" else server.openai_base_url
    async with Engine(provider=provider, api_key="test-key", base_url=base_url) as built:
        yield built


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No test sees the developer's real keys, endpoints or history (live tests read the
    key at import time and pass it explicitly)."""
    for name in list(os.environ):
        if name.startswith(("LLAMABERRY_", "GROQ_", "OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LLAMABERRY_HOME", str(tmp_path / "home"))
    # And where the history would go without it, for a subprocess whose environment drops
    # every LLAMABERRY_ setting: never the developer's own.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
