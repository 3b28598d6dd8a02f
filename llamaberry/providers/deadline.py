"""One deadline over many awaits: a call's `--timeout` and a run's `--run-timeout`."""

from __future__ import annotations

import asyncio
from typing import Any


class Deadline:
    """A deadline checked at many awaits, by one timer: `with deadline: await ...` raises
    `TimeoutError` when the deadline passes during the await (or had passed before it and the
    await pauses).

    Time spent between those awaits (a consumer's, with an item in hand) is never interrupted.
    `asyncio.timeout` per await does the same, but schedules and cancels a timer each time:
    about 4 microseconds an item, a few hundred per run.
    """

    __slots__ = ("_cancelling", "_fired", "_handle", "_task", "expired")

    def __init__(self, when: float) -> None:
        self.expired = False
        self._fired = False
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._handle: asyncio.Handle = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self._task is not None and not self._fired:  # inside an await: interrupt it, once
            self._fired = True
            self._task.cancel()

    def cancel(self) -> None:
        """Stop the timer (the work it bounded is over)."""
        self._handle.cancel()

    def __enter__(self) -> Deadline:
        task = asyncio.current_task()
        assert task is not None
        self._task, self._cancelling = task, task.cancelling()
        if self.expired:
            # Passed while the caller held the last item: interrupt this await at its first
            # pause, as `asyncio.timeout` would, so the work under way learns it was stopped.
            # (An await that did not pause, its item already at hand, left its call pending.)
            self._handle.cancel()
            self._handle = asyncio.get_running_loop().call_soon(self._expire)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: object, tb: object) -> None:
        task, self._task = self._task, None
        if self._fired and task is not None:
            # As asyncio.timeout does: our cancel becomes a TimeoutError, anyone else's stays.
            self._fired = False
            if task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
                raise TimeoutError from None
