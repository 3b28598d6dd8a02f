"""What lets a rerun resume: the key each (item, mode) run is saved under, the eval's use of the
history store, and the claims that let two evals of one set split the items."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from llamaberry import modes as registry
from llamaberry.core.results import Mode, Run
from llamaberry.eval.datasets import Item
from llamaberry.store import Store, history_enabled

if TYPE_CHECKING:
    from llamaberry.engine import Engine


# The settings that change what a run answers; a change in any of them means a fresh run.
_ANSWER_SETTINGS = (
    "provider",
    "model",
    "base_url",
    "temperature",
    "max_tokens",
    "reasoning_effort",
)


def eval_key(
    engine: Engine,
    item: Item,
    mode: Mode,
    served: str | None = None,
    options: dict | None = None,
) -> str:
    """The store tag for this item through this mode with this engine's settings and options.

    `served` is the model the endpoint really answers with; it joins the key only when it is
    not the asked id, so a single-model server that changed its model is asked afresh.
    The mode's prompt version is not in the tag but is matched beside it (`History.find`),
    so that runs made with other prompts are still found under it, to be counted and run
    again rather than reused.
    """
    settings = engine.settings.model_dump(include=set(_ANSWER_SETTINGS), mode="json")
    if served is not None and served != settings["model"]:
        settings["served_model"] = served
    chosen = registry.options_for(mode, options or {}, engine.options)
    settings.update(chosen.model_dump(mode="json"))
    blob = json.dumps([item.question, item.occurrence, mode, settings], sort_keys=True)
    return "eval:" + hashlib.sha256(blob.encode()).hexdigest()[:32]


def history_store(engine: Engine, store: Store | None, warn: Callable[[str], None]) -> Store | None:
    """Where the eval's runs go: `store`, else the engine's history, else the default history
    unless LLAMABERRY_HISTORY=0 (then nowhere, and `warn` is told the eval cannot resume)."""
    if store is None:
        store = engine.history or (Store() if history_enabled() else None)
        if store is None:
            warn("LLAMABERRY_HISTORY=0: runs are not saved, so this eval cannot be resumed.")
    return store


class History:
    """The eval's use of the history store. The first problem with it (corrupt, a directory,
    read-only, locked for longer than the store waits) turns it off for the rest of the eval
    with one warning: the eval still finishes and reports, it only cannot be resumed."""

    def __init__(self, store: Store | None, warn: Callable[[str], None]) -> None:
        self.store = store
        self._warn = warn
        # One save at a time (SQLite writes one at a time anyway), so that once the store has
        # failed the saves queued behind it are dropped instead of each waiting out the lock.
        self._saving = asyncio.Lock()

    async def check(self) -> None:
        """Open the store now, so a problem is told before any item is paid for."""
        await self.find("eval:check")

    async def find(self, key: str, prompts: str | None = None) -> Run | None:
        """The finished run stored under `key`, if the store has one (and works); with
        `prompts`, only one made with that prompt version."""
        store = self.store
        if store is None:
            return None
        try:
            # In a thread: a locked database waits there, not on the event loop.
            return await asyncio.to_thread(store.find_eval, key, prompts=prompts)
        except Exception as error:
            self._off(error)
            return None

    async def other_prompts(self, key: str, prompts: str) -> bool:
        """Whether the store holds a finished run under `key` made with other prompts than
        `prompts` (or before runs recorded theirs): one the eval does not reuse."""
        store = self.store
        if store is None:
            return False
        try:
            return await asyncio.to_thread(store.other_prompts, key, prompts)
        except Exception as error:
            self._off(error)
            return False

    async def find_unfinished(self, key: str, prompts: str | None = None) -> Run | None:
        """The run stored under `key` that was stopped part way, if any (and the store works);
        with `prompts`, only one made with that prompt version."""
        store = self.store
        if store is None:
            return None
        try:
            return await asyncio.to_thread(store.find_unfinished, key, prompts=prompts)
        except Exception as error:
            self._off(error)
            return None

    def save_now(self, run: Run, key: str, secret: str | None) -> None:
        """Save `run` under `key` at once, on this thread: for a run stopped by Ctrl-C, whose
        task may not get to await anything more. A failure is only told."""
        store = self.store
        if store is None:
            return
        try:
            store.save(run, eval_key=key, redact=secret)
        except Exception as error:
            self._off(error)

    async def save(self, run: Run, key: str, secret: str | None) -> None:
        """Save `run` under `key`; a failure turns the store off instead of failing the eval."""
        async with self._saving:
            store = self.store
            if store is None:
                return
            try:
                await asyncio.to_thread(store.save, run, eval_key=key, redact=secret)
            except Exception as error:
                self._off(error)

    def _off(self, error: Exception) -> None:
        if self.store is None:
            return  # told once
        where = self.store.path
        self.store = None
        reason = str(error).removesuffix(".")
        if str(where) not in reason:
            reason = f"{reason} ({where})"
        self._warn(
            f"the history cannot be used: {reason}. This eval goes on without saving its "
            "runs, so it cannot be resumed."
        )


class Claims:
    """Which items this process is running right now, told to other processes through
    byte-range locks on one file beside the history: two evals of the same set at once
    then split the items instead of paying for each twice. A lock dies with its process,
    so a killed eval leaves nothing behind. (POSIX only; elsewhere nothing is shared.)"""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd
        self._held: set[str] = set()

    @classmethod
    def beside(cls, store: Store | None, warn: Callable[[str], None]) -> Claims:
        """Claims kept next to `store` (none without a store: nothing could be reused)."""
        if store is None or sys.platform == "win32":
            return cls(None)
        path = store.path.with_name(store.path.name + ".claims")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return cls(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as error:
            warn(f"cannot share running items with other evals ({path}: {error.strerror}).")
            return cls(None)

    def take(self, key: str) -> bool:
        """Claim `key`; False when another process is running it now."""
        if self._fd is None:
            return True
        import fcntl

        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _offset(key))
        except OSError:
            return False
        self._held.add(key)
        return True

    def release(self, key: str) -> None:
        """Let other processes have `key` again."""
        if self._fd is None or key not in self._held:
            return
        import fcntl

        self._held.discard(key)
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, _offset(key))

    def close(self) -> None:
        """Release every claim."""
        if self._fd is not None:
            os.close(self._fd)  # drops every lock this process holds on the file
            self._fd = None


def _offset(key: str) -> int:
    # One byte per key, far apart: 62 bits of the key's hash make a clash vanishingly rare.
    return int(hashlib.sha256(key.encode()).hexdigest()[:15], 16)
