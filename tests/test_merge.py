"""The one merge of concurrent event streams (vote, drafts, the page's compare): order, errors,
closing and ticks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from llamaberry.core.errors import LlamaberryError
from llamaberry.run.merge import merge


def numbered(
    name: str, count: int, delay: float, closed: list[str], fail_at: int | None = None
) -> AsyncIterator[str]:
    async def events() -> AsyncIterator[str]:
        try:
            for i in range(count):
                await asyncio.sleep(delay)
                if i == fail_at:
                    raise LlamaberryError(f"{name} broke")
                yield f"{name}{i}"
        finally:
            closed.append(name)

    return events()


async def collect(batches: AsyncIterator[list[tuple[str, str]]]) -> list[tuple[str, str]]:
    return [item async for batch in batches for item in batch]


async def test_events_come_in_arrival_order_named_by_their_stream():
    closed: list[str] = []
    streams = {"a": numbered("a", 3, 0.01, closed), "b": numbered("b", 3, 0.015, closed)}
    got = await collect(merge(streams))
    assert [event for _, event in got] == ["a0", "b0", "a1", "b1", "a2", "b2"]
    assert all(event.startswith(name) for name, event in got)
    assert sorted(closed) == ["a", "b"]


async def test_the_first_error_comes_after_the_events_before_it_and_cancels_the_others():
    closed: list[str] = []
    streams = {
        "a": numbered("a", 5, 0.01, closed, fail_at=2),
        "b": numbered("b", 100, 0.01, closed),
    }
    got: list[str] = []
    with pytest.raises(LlamaberryError, match="a broke"):
        async for batch in merge(streams):
            got += [event for _, event in batch]
    assert got[:4] == ["a0", "b0", "a1", "b1"] and "b5" not in got
    assert sorted(closed) == ["a", "b"]  # b was cancelled, and had settled before the raise


async def test_closing_the_merge_closes_every_stream():
    closed: list[str] = []
    streams = {"a": numbered("a", 100, 0.01, closed), "b": numbered("b", 100, 0.01, closed)}
    async with contextlib.aclosing(merge(streams)) as batches:
        async for batch in batches:
            if any(event == "a2" for _, event in batch):
                break
    assert sorted(closed) == ["a", "b"]


async def test_a_tick_is_an_empty_batch_while_the_streams_are_silent():
    closed: list[str] = []
    batches = [batch async for batch in merge({"a": numbered("a", 1, 0.25, closed)}, tick=0.05)]
    assert batches[-1] == [("a", "a0")]
    assert len(batches) >= 3 and all(batch == [] for batch in batches[:-1])
