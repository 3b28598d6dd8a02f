"""The async engine: one object per configuration, shared by any number of concurrent runs
(one chat client, one connection pool, one rate limiter)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from .clients import ChatClient, RetryPolicy, make_client
from .config import Settings
from .errors import InputError, RunFailedError
from .events import Event, RunFinished
from .limits import RateLimiter
from .redact import redact
from .refine import refine as refine_mode
from .results import Mode, Run
from .runner import ModeBody, check_question, drive
from .single import single as single_mode
from .steps import steps as steps_mode
from .store import Store, history_enabled

if TYPE_CHECKING:
    from .compare import Comparison

log = logging.getLogger("llamaberry")


class Engine:
    """Runs questions through the refine, steps and single modes against one model endpoint.

    Every argument left as None comes from the environment (see the README), then the
    defaults. Use it as `async with Engine() as engine:` or call `aclose()` when done.
    """

    def __init__(
        self,
        model: str | None = None,
        provider: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        turns: int | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        reasoning_effort: str | None = None,
        timeout: float | None = None,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        context: int | None = None,
        loop_guard: bool | None = None,
        run_timeout: float | None = None,
        settings: Settings | None = None,
        client: ChatClient | None = None,
        on_finish: Callable[[Run], None] | None = None,
        history: bool | Store | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings or Settings.load(
            model=model,
            provider=provider,
            api_key=api_key,
            base_url=base_url,
            turns=turns,
            temperature=temperature,
            max_tokens=max_tokens,
            reasoning_effort=reasoning_effort,
            timeout=timeout,
            rpm=rpm,
            tpm=tpm,
            context=context,
            loop_guard=loop_guard,
            run_timeout=run_timeout,
        )
        # Pass a shared `limiter` to make several engines pace as one (same key, same limits).
        self.client = client or self._make_client(self.settings, limiter)
        # The SDK import (a few hundred ms, once per process) starts now, in the background,
        # so building an engine stays instant and the first call rarely waits for it; runs
        # and calls start their clocks only once it is done (`ChatClient.ready`).
        self.client.warm()
        self.on_finish = on_finish
        # Every run is saved unless history=False or LLAMABERRY_HISTORY=0; the database opens
        # on the first save, so an engine that never runs never touches the disk.
        if history is None:
            history = history_enabled()
        self.history: Store | None = (
            history if isinstance(history, Store) else Store() if history else None
        )

    @staticmethod
    def _make_client(settings: Settings, limiter: RateLimiter | None = None) -> ChatClient:
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return make_client(
            settings.provider,
            api_key=key,
            base_url=settings.base_url,
            model=settings.model,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            reasoning_effort=settings.reasoning_effort,
            timeout=settings.timeout,
            retry=RetryPolicy(max_retries=settings.max_retries, max_wait=settings.max_wait),
            limiter=limiter or RateLimiter(rpm=settings.rpm, tpm=settings.tpm),
            max_connections=settings.concurrency,
        )

    @property
    def model(self) -> str:
        """The model this engine asks."""
        return self.client.model

    # -- streams -----------------------------------------------------------------------------

    def refine_stream(self, question: str, *, turns: int | None = None) -> AsyncIterator[Event]:
        """Stream the events of a refine run: `turns` turns, then the synthesis."""
        count = self.settings.turns if turns is None else turns
        if not isinstance(count, int) or not 1 <= count <= 10:
            raise InputError(f"turns must be a whole number from 1 to 10 (got {count!r}).")
        return self._stream("refine", question, lambda ctx: refine_mode(ctx, count), turns=count)

    def single_stream(self, question: str) -> AsyncIterator[Event]:
        """Stream the events of a single-turn run."""
        return self._stream("single", question, single_mode)

    def steps_stream(
        self, question: str, *, min_steps: int | None = None, max_steps: int | None = None
    ) -> AsyncIterator[Event]:
        """Stream the events of a steps run: validated JSON steps, then the final answer."""
        low = self.settings.min_steps if min_steps is None else min_steps
        high = self.settings.max_steps if max_steps is None else max_steps
        for name, value, top in (("min_steps", low, 50), ("max_steps", high, 100)):
            if not isinstance(value, int) or not 1 <= value <= top:
                raise InputError(f"{name} must be a whole number from 1 to {top} (got {value!r}).")
        if low > high:
            raise InputError(f"min_steps ({low}) is larger than max_steps ({high}).")
        return self._stream(
            "steps", question, lambda ctx: steps_mode(ctx, low, high), min_steps=low, max_steps=high
        )

    def stream(self, mode: Mode, question: str, **options: Any) -> AsyncIterator[Event]:
        """Stream a run of `mode` by name ("single", "refine" or "steps")."""
        streams = {
            "single": self.single_stream,
            "refine": self.refine_stream,
            "steps": self.steps_stream,
        }
        if mode not in streams:
            raise InputError(f"Unknown mode '{mode}'; choose one of: {', '.join(streams)}.")
        return streams[mode](question, **options)

    # -- awaitables --------------------------------------------------------------------------

    async def refine(self, question: str, *, turns: int | None = None) -> Run:
        """Run the refine mode and return the finished run (raises `RunFailedError`)."""
        return await collect(self.refine_stream(question, turns=turns))

    async def single(self, question: str) -> Run:
        """Run the single-turn baseline and return the finished run."""
        return await collect(self.single_stream(question))

    async def steps(
        self, question: str, *, min_steps: int | None = None, max_steps: int | None = None
    ) -> Run:
        """Run the steps mode and return the finished run (raises `RunFailedError`)."""
        return await collect(self.steps_stream(question, min_steps=min_steps, max_steps=max_steps))

    async def run(self, mode: Mode, question: str, **options: Any) -> Run:
        """Run `mode` by name and return the finished run."""
        return await collect(self.stream(mode, question, **options))

    async def compare(
        self, question: str, modes: Sequence[Mode] = ("single", "refine", "steps")
    ) -> Comparison:
        """Run `modes` on `question` concurrently and return them side by side."""
        from .compare import compare

        return await compare(self, question, modes)

    async def models(self) -> list[str]:
        """The models the endpoint serves."""
        return await self.client.list_models()

    # -- lifecycle ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection pool (and the history database)."""
        await self.client.aclose()
        if self.history is not None:
            self.history.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _stream(
        self, mode: Mode, question: str, body: ModeBody, **used: Any
    ) -> AsyncIterator[Event]:
        # Checked here, eagerly, so bad input fails before a generator (or a request) exists.
        question = check_question(question, self.settings.max_question_chars)
        # A key pasted into the question is blanked before it is sent, shown or saved.
        question = redact(question)
        # The run records the settings it really used, per-call overrides included.
        settings = self.settings.model_copy(update=used) if used else self.settings
        return drive(self.client, settings, mode, question, body, self._finished)

    def _finished(self, run: Run) -> None:
        if self.history is not None:
            key = self.settings.api_key
            try:
                self.history.save(run, redact=key.get_secret_value() if key else None)
            except Exception as error:  # a full disk must not cost the user their answer
                log.warning("llamaberry: run %s not saved to history: %s", run.id, error)
        if self.on_finish is not None:
            self.on_finish(run)


async def collect(events: AsyncIterator[Event]) -> Run:
    """Consume a run's events and return its `Run`; raise `RunFailedError` if it failed."""
    run: Run | None = None
    async for event in events:
        if isinstance(event, RunFinished):
            run = event.run
    if run is None:
        raise RuntimeError("the event stream ended without a RunFinished event")
    if run.status != "ok":
        raise RunFailedError(run, run._exception) from run._exception
    return run
