"""The async engine: one object per configuration, shared by any number of concurrent runs
(one chat client, one connection pool, one rate limiter)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from llamaberry import modes
from llamaberry.compare import Comparison, compare
from llamaberry.core.errors import InputError, RunFailedError
from llamaberry.core.events import CallFinished, Event, RunFinished, RunStarted, TextDelta
from llamaberry.core.redact import redact
from llamaberry.core.results import Mode, Run
from llamaberry.core.settings import ENGINE_SETTINGS, Settings
from llamaberry.providers import make_client
from llamaberry.providers.base import ChatClient
from llamaberry.providers.limits import LimiterPool, RateLimiter
from llamaberry.providers.retries import RetryPolicy
from llamaberry.run.passthrough import Passthrough
from llamaberry.run.replay import Replay
from llamaberry.run.runner import RunStream, check_question, drive
from llamaberry.store import Store, history_enabled

log = logging.getLogger("llamaberry")

# The settings one run may choose for itself (`settings=` of `stream`, `run`, `open`): the
# sampling, and the upstream model on the same endpoint and key.
RUN_SETTINGS = ("model", "temperature", "max_tokens", "reasoning_effort")
# Clients an engine keeps for runs that ask another upstream model or reasoning effort than its
# own: the least recently used idle one is closed to make room for another.
MAX_CLIENTS = 16


class Engine:
    """Runs questions through any registered mode (see `modes.py`) against one model endpoint.

    Every argument left as None comes from the environment (see the README), then the
    defaults. Mode options given here (`turns=`, `samples=`...) are this engine's defaults for
    the modes that take them. Use it as `async with Engine() as engine:` or call `aclose()`.
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
        limiters: LimiterPool | None = None,
        **options: Any,
    ) -> None:
        # The endpoint settings are the keywords `Settings` declares for the engine
        # (ENGINE_SETTINGS); they are spelled out above for editors and help(), and a test
        # checks that the two lists agree.
        given = locals()
        self.settings = settings or Settings.load(**{k: given[k] for k in ENGINE_SETTINGS})
        # Checked now, with the environment's values, so a bad one fails before any request.
        self.options: dict[str, Any] = {
            k: v for k, v in {"turns": turns, **options}.items() if v is not None
        }
        modes.check_defaults(self.options)
        # Pass a shared `limiter` to make several engines pace as one (same key, same limits),
        # or a pool of them (`limiters`), which also paces the runs that ask another model.
        self.limiters = limiters or LimiterPool()
        if limiter is None and limiters is not None:
            limiter = limiters.get(self.settings)
        self.client = client or self._make_client(self.settings, limiter)
        # Clients for runs that chose another model or effort, least recently used first, and
        # how many runs each has in flight.
        self._clients: dict[tuple[str, str | None], ChatClient] = {}
        self._in_flight: dict[ChatClient, int] = {}
        self._retired: set[ChatClient] = set()
        self._closing: set[asyncio.Task[None]] = set()
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

    def stream(
        self,
        mode: Mode,
        question: str,
        *,
        settings: Mapping[str, Any] | None = None,
        passthrough: Passthrough | None = None,
        **options: Any,
    ) -> AsyncIterator[Event]:
        """Stream a run of `mode` by name; `options` are that mode's (see `llamaberry modes`),
        `settings` this run's own model, temperature, max_tokens or reasoning_effort.
        `passthrough` is what the caller asks of the upstream model beside the question (a
        response_format or tools for the final call, sampling for every call; see
        run/passthrough.py)."""
        return self.open(mode, question, options, settings=settings, passthrough=passthrough)

    def open(
        self,
        mode: Mode,
        question: str,
        options: dict[str, Any] | None = None,
        *,
        eval_key: str | None = None,
        history: Store | bool | None = True,
        settings: Mapping[str, Any] | None = None,
        passthrough: Passthrough | None = None,
        resume: Run | None = None,
        on_run: Callable[[Run], None] | None = None,
    ) -> AsyncIterator[Event]:
        """`stream` with the history's say: `eval_key` tags the saved run, `history` picks the
        store (True: this engine's; False or None: not saved).

        `resume` is an earlier run of this question that did not finish: each call of the new
        run sent exactly as one of its finished calls was gets that call's reply, unsent
        (`run.replay`). `on_run` is given the new `Run` at once, to keep even if the run is
        cancelled before it yields its end."""
        spec = modes.get(mode)
        # Checked here, eagerly, so bad input fails before a generator (or a request) exists.
        chosen = modes.options_for(mode, options or {}, self.options)
        question = check_question(question, self.settings.max_question_chars)
        # A key pasted into the question is blanked before it is sent, shown or saved.
        question = redact(question)
        store = self.history if history is True else history or None
        own = self.run_settings(settings)
        client = self._client_for(own)
        run = drive(client, own, spec, question, chosen, passthrough, Replay.of(resume))
        run.run.prompt_version = modes.prompt_version(mode)
        if on_run is not None:
            on_run(run.run)
        return self._consume(run, store, eval_key, client)

    def run_settings(self, settings: Mapping[str, Any] | None = None) -> Settings:
        """This engine's settings with a run's own `settings` over them (`RUN_SETTINGS` only;
        None leaves a setting as it is); `InputError` for a bad one."""
        given = {k: v for k, v in (settings or {}).items() if v is not None}
        if not given:
            return self.settings
        unknown = sorted(set(given) - set(RUN_SETTINGS))
        if unknown:
            raise InputError(
                f"A run cannot choose {', '.join(unknown)}; it may choose {', '.join(RUN_SETTINGS)}."
            )
        try:
            return Settings.model_validate(self.settings.model_dump() | given)
        except ValidationError as error:
            first = error.errors()[0]
            raise InputError(f"Invalid {first['loc'][0]}: {first['msg']}.") from None

    def _client_for(self, settings: Settings) -> ChatClient:
        """The client for a run's model and reasoning effort: this engine's own, or one kept
        for them (made on first use; temperature and max_tokens are sent per call)."""
        key = (settings.model, settings.reasoning_effort)
        if key == (self.settings.model, self.settings.reasoning_effort):
            return self.client
        client = self._clients.pop(key, None)
        if client is None:
            if len(self._clients) >= MAX_CLIENTS:
                self._retire_one()
            client = self._make_client(settings, self.limiters.get(settings))
            client.warm()
        self._clients[key] = client  # now the most recently used
        return client

    def _retire_one(self) -> None:
        """Make room for another client: close the least recently used one with no run."""
        idle = next((k for k, c in self._clients.items() if not self._in_flight.get(c)), None)
        if idle is None:
            raise InputError(
                f"Runs on {MAX_CLIENTS} other models or reasoning efforts are in flight; "
                "ask again when one has finished."
            )
        client = self._clients.pop(idle)
        self._in_flight.pop(client, None)
        self._retired.add(client)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: closed with the engine
            return
        task = loop.create_task(self._close_retired(client))
        self._closing.add(task)  # held until done, so it is not collected half-way
        task.add_done_callback(self._closing.discard)

    async def _close_retired(self, client: ChatClient) -> None:
        if client in self._retired:
            self._retired.discard(client)
            await client.aclose()

    def refine_stream(self, question: str, *, turns: int | None = None) -> AsyncIterator[Event]:
        """Stream the events of a refine run: `turns` turns, then the synthesis."""
        return self.stream("refine", question, turns=turns)

    def single_stream(self, question: str) -> AsyncIterator[Event]:
        """Stream the events of a single-turn run."""
        return self.stream("single", question)

    def steps_stream(
        self, question: str, *, min_steps: int | None = None, max_steps: int | None = None
    ) -> AsyncIterator[Event]:
        """Stream the events of a steps run: validated JSON steps, then the final answer."""
        return self.stream("steps", question, min_steps=min_steps, max_steps=max_steps)

    # -- awaitables --------------------------------------------------------------------------

    async def run(
        self,
        mode: Mode,
        question: str,
        *,
        settings: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Run:
        """Run `mode` by name and return the finished run (raises `RunFailedError`);
        `settings` as for `stream`."""
        return await collect(self.stream(mode, question, settings=settings, **options))

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

    async def compare(
        self, question: str, modes: Sequence[Mode] | None = None, **options: Any
    ) -> Comparison:
        """Run `modes` (default: compare's default set) on `question` concurrently, side by
        side; `options` go to the modes that take them."""
        return await compare(self, question, modes, **options)

    async def models(self) -> list[str]:
        """The models the endpoint serves."""
        return await self.client.list_models()

    # -- lifecycle ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection pools, and the history once its queued saves are written."""
        await self.client.aclose()
        others = [*self._clients.values(), *self._retired]
        self._clients.clear()
        self._retired.clear()
        for client in others:
            await client.aclose()
        if self.history is not None:
            await self.history.aflush()
            self.history.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _consume(
        self, stream: RunStream, store: Store | None, eval_key: str | None, client: ChatClient
    ) -> AsyncIterator[Event]:
        """Pass the run's events on; the history (and `on_finish`) consume them on the way.

        The run is saved when it starts, after each call and when it ends, each time by the
        store's writer thread, so the loop never waits on the database.
        """
        run = stream.run
        key = self.settings.api_key
        secret = key.get_secret_value() if key else None

        def save() -> None:
            if store is not None:
                try:
                    store.save_soon(run, eval_key=eval_key, redact=secret)
                except Exception as error:  # serializing must not cost the user their answer
                    log.warning("llamaberry: run %s not saved to history: %s", run.id, error)

        settled = False
        self._in_flight[client] = self._in_flight.get(client, 0) + 1
        try:
            async for event in stream:
                # Most events are text: an exact type test passes them on before the model
                # class checks below, which go through pydantic's own isinstance hook.
                if type(event) is TextDelta:
                    pass
                elif isinstance(event, RunStarted | CallFinished):
                    save()
                elif isinstance(event, RunFinished):
                    settled = True
                    save()
                    if self.on_finish is not None:
                        self.on_finish(run)
                yield event
        finally:
            left = self._in_flight.get(client, 0) - 1
            if left > 0:
                self._in_flight[client] = left
            else:
                self._in_flight.pop(client, None)
                if client in self._retired:  # retired while this run still used it
                    await self._close_retired(client)
            if not settled:
                # Stopped part-way (cancelled, or the consumer closed us): let the run record
                # that, then keep what finished.
                await stream.aclose()
                if run.status != "running":
                    save()
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
