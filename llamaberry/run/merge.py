"""Running several event streams at once: vote's samples, drafts' drafts, compare's modes in
the web UI. One merge for all of them, so they cancel, order and fail the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, TypeVar

Name = TypeVar("Name")
Event = TypeVar("Event")

# What a stream's pump puts on the queue beside its events.
_EVENT, _DONE, _ERROR = "event", "done", "error"


async def merge(
    streams: Mapping[Name, AsyncIterator[Event]], *, tick: float | None = None
) -> AsyncGenerator[list[tuple[Name, Event]], None]:
    """Run `streams` concurrently; yield what has arrived, in order, as batches of (name, event).

    A batch holds every event already waiting, so a consumer that redraws per batch keeps up
    without one redraw per token. With `tick`, an empty batch comes every `tick` seconds in
    which nothing arrives (a page can move its clock while the model is silent).

    The first error in any stream cancels the others and is raised here, after the events that
    came before it. A consumer that wants the other streams to go on catches each stream's
    errors inside that stream and yields them as events. Closing or cancelling the merged
    stream cancels every stream; either way each has settled (its call records its partial
    text and error, its HTTP response is closed) before this generator lets go.
    """
    queue: asyncio.Queue[tuple[Name, str, Any]] = asyncio.Queue()

    async def pump(name: Name, stream: AsyncIterator[Event]) -> None:
        try:
            async for event in stream:
                queue.put_nowait((name, _EVENT, event))
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # handed to the consumer, which raises it
            queue.put_nowait((name, _ERROR, error))
        else:
            queue.put_nowait((name, _DONE, None))

    tasks = [asyncio.create_task(pump(name, stream)) for name, stream in streams.items()]
    try:
        running = len(tasks)
        while running:
            if tick is None:
                waiting = [await queue.get()]
            else:
                try:
                    # Not asyncio.wait_for: on Python 3.11 it drops a cancel (Stop) that
                    # arrives in the same loop turn as the next event, and the streams would
                    # go on.
                    async with asyncio.timeout(tick):
                        waiting = [await queue.get()]
                except TimeoutError:
                    yield []
                    continue
            while not queue.empty():
                waiting.append(queue.get_nowait())
            batch: list[tuple[Name, Event]] = []
            for name, what, value in waiting:
                if what is _EVENT:
                    batch.append((name, value))
                elif what is _DONE:
                    running -= 1
                else:
                    if batch:
                        yield batch
                    raise value
            if batch:
                yield batch
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
