"""Evals through the provider's Batch API: every run's calls, gathered into one batch per round.

Every (item, mode) run of the eval runs at once, with the engine's usual mode code, over a
`BatchClient`: a chat client that does not send a call but hands its request to the `Batcher`
and waits. When every live run is waiting on a call, the batcher has the round: it writes the
requests as one JSONL file (custom_id, method, url, body), uploads it, creates one batch, polls
it, and hands each run its reply; the runs go on to their next calls, which make the next round.
So refine's turns go in rounds 1, 2, 3 and its synthesis in round 4, next to single's one call
in round 1, and the requests are the ones the synchronous path sends, un-streamed.

A ledger beside the history (`store.batches`) keeps every request's batch and reply, so the
same command run again after an interruption sends nothing already answered, waits on batches
already created, and uploads no file twice. A line that failed or expired goes again in the next
round, up to `MAX_TRIES` times; then its run fails with the provider's words.

A `Batcher` with `backend=None` sends nothing: it writes the pending round to a file instead
(`llamaberry batch export`, for `vllm run-batch`), and answers come back through
`import_outputs` (`llamaberry batch import`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from llamaberry.core.errors import (
    InputError,
    JSONValidationError,
    ProviderError,
    format_duration,
)
from llamaberry.core.providers import row_of
from llamaberry.core.results import Message
from llamaberry.providers.base import ChatClient, Completion, Delta, StreamItem, Thinking
from llamaberry.providers.streams import chunk_of, split_thinking, usage_of
from llamaberry.providers.tokens import estimate_prompt
from llamaberry.store.batches import BatchLedger

if TYPE_CHECKING:
    from llamaberry.providers.sdk import SDKClient

# Times one request is put in a batch before its run fails.
MAX_TRIES = 3
# The window asked for; Groq and OpenAI both take 24h (Groq also shorter ones).
COMPLETION_WINDOW = "24h"
CHAT_URL = "/v1/chat/completions"
# The ledger's name for requests written to a file (`batch export`) rather than sent.
EXPORTED = "export"
_DONE = ("completed", "failed", "expired", "cancelled")

# The run a call belongs to: its key and how many calls it has made so far.
_RUN: contextvars.ContextVar[_RunTag | None] = contextvars.ContextVar("batch_run", default=None)


@dataclass
class _RunTag:
    key: str
    # How many calls of each body the run has made: a request is named by its run, its body
    # and this count, never by its place among the run's calls, so calls a resumed run
    # replays from the history (run/replay.py) do not shift the names of those it sends.
    calls: dict[str, int] = field(default_factory=dict)


@dataclass
class _Pending:
    run: str
    custom_id: str
    body: dict[str, Any]
    body_hash: str
    future: asyncio.Future[tuple[int, dict[str, Any]]]
    tries: int = 0


@dataclass
class Progress:
    """Where a batch eval stands, in the provider's own counts."""

    round: int
    batches: int
    done: int
    failed: int
    total: int
    waited: float

    def line(self) -> str:
        return (
            f"round {self.round}: {self.done + self.failed}/{self.total} requests back"
            f" ({self.failed} failed) in {self.batches} batch(es), waited "
            f"{format_duration(self.waited)}"
        )


class NoBatchAPIError(InputError):
    """The endpoint has no Batch API."""


def no_batch_api(provider: str) -> str:
    """The one line for a provider whose row says it has no Batch API."""
    return (
        f"The {provider} provider has no Batch API: --batch needs Groq or an "
        "OpenAI-compatible endpoint that serves /files and /batches."
    )


def check_batch_api(provider: str) -> None:
    """Refuse `provider` in one line, before anything starts or is sent, unless its row in the
    provider table says it serves a Batch API (`Provider.batch_api`)."""
    row = row_of(provider)
    if row is None or not row.batch_api:
        raise NoBatchAPIError(no_batch_api(provider))


@dataclass
class Batcher:
    """Gathers the calls of concurrent runs into rounds and sends each round as one batch."""

    ledger: BatchLedger
    backend: Any  # the SDK client whose `files` and `batches` are used; None: export
    poll: float = 10.0
    quiet: float = 2.0
    on_progress: Callable[[Progress], None] | None = None
    rounds: int = 0
    files_uploaded: int = 0
    batches_created: int = 0
    exported: list[dict[str, Any]] = field(default_factory=list)
    _pending: list[_Pending] = field(default_factory=list)
    _alive: set[str] = field(default_factory=set)
    # Runs the eval will start but has not yet (a round waits for them to call or be skipped).
    _announced: set[str] = field(default_factory=set)
    exported_round: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _worker: asyncio.Task[None] | None = None
    _stopped: BaseException | None = None

    # -- what runs see -----------------------------------------------------------------------

    def announce(self, keys: Sequence[str]) -> None:
        """The runs the eval is about to start: no round goes before each has called, ended,
        or been `skip`ped."""
        self._announced.update(keys)

    def skip(self, key: str) -> None:
        """The run `key` will not run here (its answer is in the history, or it was refused)."""
        if key in self._announced:
            self._announced.discard(key)
            self._changed.set()

    async def check(self) -> None:
        """Fail in one line, before anything is sent, when the endpoint has no Batch API."""
        if self.backend is None:
            return
        try:
            await self.backend.batches.list()
        except Exception as error:
            status = getattr(error, "status_code", None)
            if status in (404, 405, 501):
                raise NoBatchAPIError(
                    f"This endpoint has no Batch API (GET /batches answered {status}); run the "
                    "eval without --batch, or use `llamaberry batch export` for vLLM."
                ) from None
            raise

    @contextlib.contextmanager
    def run(self, key: str) -> Iterator[None]:
        """Mark the code inside as one run of the eval, known by `key`: its calls are named
        after it, and a round waits for it to call or to end."""
        token = _RUN.set(_RunTag(key))
        self._announced.discard(key)
        self._alive.add(key)
        self._changed.set()
        try:
            yield
        finally:
            self._alive.discard(key)
            _RUN.reset(token)
            self._changed.set()

    async def submit(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Put one request in the next round; its (status, response body) when it is back."""
        if self._stopped is not None:
            raise self._stopped
        tag = _RUN.get()
        if tag is None:
            raise RuntimeError("a batch call outside Batcher.run()")
        encoded = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        body_hash = hashlib.sha256(encoded).hexdigest()[:32]
        seen = tag.calls[body_hash] = tag.calls.get(body_hash, 0) + 1
        run = hashlib.sha256(tag.key.encode()).hexdigest()[:16]
        item = _Pending(
            run=tag.key,
            custom_id=f"{run}-{body_hash[:12]}-{seen}",
            body=body,
            body_hash=body_hash,
            future=asyncio.get_running_loop().create_future(),
        )
        self._pending.append(item)
        self._changed.set()
        self._start()
        return await item.future

    def summary(self) -> str:
        """One line for the report: what went through the Batch API."""
        if self.backend is None:
            return (
                "Calls were answered by your own batch runner, round by round "
                "(`llamaberry batch export` and `import`)."
            )
        return (
            f"Calls went through the provider's Batch API in {self.rounds} round(s): "
            f"{self.files_uploaded} file(s) uploaded, {self.batches_created} batch(es) created "
            "by this process (a resumed eval reuses what an earlier one sent)."
        )

    # -- rounds ------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._rounds())

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            # What stopped it, if anything did, was handed to every run that waited.
            with contextlib.suppress(BaseException):
                await self._worker

    def _ready(self) -> bool:
        """Every live run is waiting on a call of the next round."""
        waiting = {p.run for p in self._pending}
        return bool(self._pending) and not self._announced and self._alive <= waiting

    async def _rounds(self) -> None:
        while self._pending:
            # Until every live run waits, or nothing has moved for a while (a run waiting on
            # something that is not a call must not hold the round back for ever).
            while not self._ready():
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), self.quiet)
                except TimeoutError:
                    break
            await asyncio.sleep(0)  # let runs that were just answered make their next call
            if not self._ready() and self._changed.is_set():
                continue
            batch, self._pending = self._pending, []
            try:
                await self._round(batch)
            except Exception as error:  # every waiting run learns why, and later calls too
                self._stopped = error
                for item in batch + self._pending:
                    if not item.future.done():
                        item.future.set_exception(error)
                self._pending = []
                return

    async def _round(self, batch: list[_Pending]) -> None:
        self.rounds += 1
        waiting: dict[str, list[_Pending]] = {}
        fresh: list[_Pending] = []
        for item in batch:
            known = self.ledger.call(item.custom_id, item.body_hash)
            if known is not None and known.status is not None and known.response is not None:
                item.future.set_result((known.status, orjson.loads(known.response)))
            elif known is not None and known.batch_id is not None:
                waiting.setdefault(known.batch_id, []).append(item)
            else:
                fresh.append(item)
        if self.backend is None:
            # Exporting: every request not answered yet is written, again where an earlier
            # export wrote it and no answer was imported since (that file may be lost).
            unanswered = fresh + [item for items in waiting.values() for item in items]
            if unanswered:
                self._export(unanswered)
            return
        if fresh:
            batch_id = await self._send(fresh)
            waiting.setdefault(batch_id, []).extend(fresh)
        if waiting:
            await self._collect(waiting)

    def _lines(self, items: Sequence[_Pending]) -> bytes:
        lines = [
            {"custom_id": i.custom_id, "method": "POST", "url": CHAT_URL, "body": i.body}
            for i in sorted(items, key=lambda i: i.custom_id)
        ]
        return b"".join(orjson.dumps(line, option=orjson.OPT_SORT_KEYS) + b"\n" for line in lines)

    async def _send(self, items: list[_Pending]) -> str:
        """Upload the round's file and create its batch (each only once, across processes)."""
        content = self._lines(items)
        digest = hashlib.sha256(content).hexdigest()
        file_id = self.ledger.file(digest)
        if file_id is None:
            uploaded = await self.backend.files.create(
                file=(f"llamaberry-round-{self.rounds}.jsonl", content), purpose="batch"
            )
            file_id = uploaded.id
            self.files_uploaded += 1
            self.ledger.uploaded(digest, file_id)
        batch_id = self.ledger.batch_for_file(file_id)
        if batch_id is None:
            created = await self.backend.batches.create(
                input_file_id=file_id, endpoint=CHAT_URL, completion_window=COMPLETION_WINDOW
            )
            batch_id = created.id
            self.batches_created += 1
            self.ledger.created(batch_id, file_id, self.rounds, len(items))
        self.ledger.sent(batch_id, [(i.custom_id, i.body_hash) for i in items])
        return batch_id

    async def _collect(self, waiting: dict[str, list[_Pending]]) -> None:
        """Poll the round's batches until each is done, then hand out their replies."""
        started = time.monotonic()
        states = {batch_id: await self.backend.batches.retrieve(batch_id) for batch_id in waiting}
        while True:
            self._report(states, started)
            if all(s.status in _DONE for s in states.values()):
                break
            await asyncio.sleep(self.poll)
            for batch_id, state in states.items():
                if state.status not in _DONE:
                    states[batch_id] = await self.backend.batches.retrieve(batch_id)
        for batch_id, items in waiting.items():
            state = states[batch_id]
            self.ledger.status(batch_id, state.status)
            if state.status == "failed":
                raise ProviderError(_rejected(state))
            answers = await self._answers(state)
            self._hand_out(items, answers)

    def _report(self, states: dict[str, Any], started: float) -> None:
        if self.on_progress is None:
            return
        counts = [s.request_counts for s in states.values() if s.request_counts is not None]
        self.on_progress(
            Progress(
                round=self.rounds,
                batches=len(states),
                done=sum(c.completed for c in counts),
                failed=sum(c.failed for c in counts),
                total=sum(c.total for c in counts),
                waited=time.monotonic() - started,
            )
        )

    async def _answers(self, state: Any) -> dict[str, tuple[int, dict[str, Any]]]:
        answers: dict[str, tuple[int, dict[str, Any]]] = {}
        for file_id in (state.output_file_id, state.error_file_id):
            if not file_id:
                continue
            response = await self.backend.files.content(file_id)
            # The openai SDK reads the body for you (read() gives bytes); groq's waits to be
            # read (read() is a coroutine).
            content = response.read()
            if inspect.isawaitable(content):
                content = await content
            for raw in content.splitlines():
                if raw.strip():
                    record = orjson.loads(raw)
                    answers[str(record.get("custom_id"))] = _answer_of(record)
        return answers

    def _hand_out(
        self, items: list[_Pending], answers: dict[str, tuple[int, dict[str, Any]]]
    ) -> None:
        done: list[tuple[str, str, int, str]] = []
        again: list[_Pending] = []
        for item in items:
            answer = answers.get(item.custom_id)
            item.tries += 1
            if answer is not None and (answer[0] < 500 and answer[0] != 429):
                done.append(
                    (item.custom_id, item.body_hash, answer[0], orjson.dumps(answer[1]).decode())
                )
                item.future.set_result(answer)
            elif item.tries < MAX_TRIES:
                again.append(item)  # failed on the provider's side, or expired: next round
            else:
                status, body = answer or (0, {"error": {"message": "the batch expired first"}})
                item.future.set_result((status or 504, body))
        self.ledger.answered(done)
        self.ledger.forget([(i.custom_id, i.body_hash) for i in again])
        self._pending.extend(again)

    # -- export and import (vLLM's run-batch) ------------------------------------------------

    def _export(self, items: list[_Pending]) -> None:
        """Write nothing upstream: keep the round's lines for `batch export`, and stop."""
        for item in sorted(items, key=lambda i: i.custom_id):
            self.exported.append(
                {"custom_id": item.custom_id, "method": "POST", "url": CHAT_URL, "body": item.body}
            )
            self.ledger.sent("exported", [(item.custom_id, item.body_hash)])
        # The runs wait on for ever; the command that exported stops the eval here.
        self.exported_round.set()


def import_outputs(ledger: BatchLedger, content: bytes) -> tuple[int, int]:
    """Take a batch output file (vLLM's run-batch, or a provider's) into the ledger: returns
    (answers taken, lines not matching an exported request)."""
    taken = unknown = 0
    for raw in content.splitlines():
        if not raw.strip():
            continue
        record = orjson.loads(raw)
        custom_id = str(record.get("custom_id"))
        body_hash = ledger.exported_hash(custom_id)
        if body_hash is None:
            unknown += 1
            continue
        status, body = _answer_of(record)
        ledger.answered([(custom_id, body_hash, status, orjson.dumps(body).decode())])
        taken += 1
    return taken, unknown


def _answer_of(record: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = record.get("response") or {}
    error = record.get("error")
    if error and not response:
        return 500, {"error": error}
    return int(response.get("status_code") or 500), response.get("body") or {}


def _rejected(state: Any) -> str:
    data = getattr(getattr(state, "errors", None), "data", None) or []
    shown = [
        f"line {e.line}: {e.message}" if getattr(e, "line", None) else str(e.message)
        for e in data[:3]
    ]
    more = f" (and {len(data) - 3} more)" if len(data) > 3 else ""
    return "The provider rejected the batch file: " + ("; ".join(shown) or "no reason given") + more


class BatchClient(ChatClient):
    """A chat client whose calls go into the batcher's rounds instead of out at once: each is
    the request body `inner` would send (`SDKClient.request`), un-streamed. Sending to the
    provider needs its row to say it has a Batch API; exporting to a file sends nothing."""

    provider = "batch"

    def __init__(self, inner: SDKClient, batcher: Batcher) -> None:
        super().__init__(
            model=inner.model,
            temperature=inner.temperature,
            max_tokens=inner.max_tokens,
            reasoning_effort=inner.reasoning_effort,
            timeout=inner.timeout,
        )
        if batcher.backend is not None:
            check_batch_api(inner.provider)
        self.inner = inner
        self.batcher = batcher
        self.provider = inner.provider

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        json_mode: bool = False,
        max_tokens: int | None = None,
        schema: Any = None,
        temperature: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[StreamItem]:
        body = self.inner.request(
            messages,
            json_mode=json_mode,
            max_tokens=max_tokens,
            schema=schema,
            temperature=temperature,
            extra=extra,
        )
        started = time.perf_counter()
        status, reply = await self.batcher.submit(body)
        if status != 200:
            raise _error_of(status, reply)
        chunk = chunk_of(reply, whole=True)
        inline, text = split_thinking(chunk.content or "")
        thought = (chunk.reasoning or "") + inline
        if thought:
            yield Thinking(thought)
        if text:
            yield Delta(text)
        yield Completion(
            text=text,
            finish_reason=chunk.finish_reason,
            usage=usage_of(chunk.usage, text, estimate_prompt(messages)),
            seconds=time.perf_counter() - started,
            response_format=body.get("response_format", {}).get("type")
            if isinstance(body.get("response_format"), dict)
            else None,
            model=chunk.model or None,
            thinking=thought,
        )

    async def list_models(self) -> list[str]:
        return await self.inner.list_models()

    async def resolve_model(self) -> str | None:
        # Exporting asks the endpoint nothing: it may be a cluster this machine cannot reach.
        return None if self.batcher.backend is None else await self.inner.resolve_model()

    async def context_window(self) -> int | None:
        return None if self.batcher.backend is None else await self.inner.context_window()

    def warm(self) -> None:
        self.inner.warm()

    async def ready(self) -> None:
        # Exporting calls the endpoint nothing: a provider that runs in this process (the
        # local one) is not started for it.
        if self.batcher.backend is not None:
            await self.inner.ready()

    async def aclose(self) -> None:
        await self.batcher.aclose()
        await self.inner.aclose()


def _error_of(status: int, body: dict[str, Any]) -> ProviderError:
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message") or f"the batch line failed with status {status}")
    if error.get("code") == "json_validate_failed":
        return JSONValidationError(message, error.get("failed_generation"))
    return ProviderError(f"A batch request failed ({status}): {message}", status_code=status)
