"""uvicorn, run with bounds: how many connections are open at once, how long a request's head
may take to arrive, how long an idle connection is kept, and a shutdown that ends in-flight
runs at once instead of waiting for them.

uvicorn bounds the head's size (`h11_max_incomplete_event_size`) and the idle time between
requests (`timeout_keep_alive`) but not the time a head takes, so a client sending its headers
a byte at a time would hold its connection for ever. Each connection here is watched from
the moment it opens until its request reaches the app, and again after each reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

# Connections open at once; more are closed as they arrive.
MAX_CONNECTIONS = 100
# Seconds a request's head (request line and headers) may take to arrive, counted from the
# connection's opening or the end of its last reply.
HEAD_SECONDS = 10.0
# Seconds an idle keep-alive connection is kept between requests.
IDLE_SECONDS = 5
# The largest request head taken, in bytes (uvicorn answers 400 past it).
MAX_HEAD = 64 * 1024
# Seconds shutdown waits for the runs it cancelled to end their replies.
SHUTDOWN_SECONDS = 3


def connection_limit(wanted: int) -> int:
    """`wanted`, lowered so the open connections stay well within the process's file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    # Each connection may need an upstream socket too, and the process has its own files.
    return max(1, min(wanted, (soft - 64) // 2))


class Connections:
    """The open connections, by the client's address, and their head deadlines."""

    def __init__(self, limit: int = MAX_CONNECTIONS, head_seconds: float = HEAD_SECONDS) -> None:
        self.limit = limit
        self.head_seconds = head_seconds
        self.open: dict[Any, _Watched] = {}
        self.refused = 0
        self.timed_out = 0

    def protocol(self, **uvicorn_options: Any) -> asyncio.Protocol:
        """A connection's protocol: uvicorn's h11 one, watched (uvicorn's `http=` factory)."""
        return _Watched(H11Protocol(**uvicorn_options), self)

    def app(self, app: ASGIApp) -> ASGIApp:
        """`app`, telling each connection when a request of its has arrived and been answered."""

        async def watched(scope: Scope, receive: Receive, send: Send) -> None:
            connection = self.open.get(_peer(scope.get("client")))
            if connection is not None:
                connection.request_began()
            try:
                await app(scope, receive, send)
            finally:
                if connection is not None:
                    connection.request_ended()

        return watched


def _peer(address: Any) -> Any:
    return tuple(address[:2]) if address else None


class _Watched(asyncio.Protocol):
    """uvicorn's protocol for one connection, closed when its head is too slow to arrive."""

    def __init__(self, inner: H11Protocol, book: Connections) -> None:
        self.inner = inner
        self.book = book
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.requests = 0
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if len(self.book.open) >= self.book.limit:
            self.book.refused += 1
            transport.abort()
            return
        self.peer = _peer(transport.get_extra_info("peername"))
        self.book.open[self.peer] = self
        self._arm()
        self.inner.connection_made(transport)

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self.deadline = loop.call_later(self.book.head_seconds, self._expire)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expire(self) -> None:
        self.deadline = None
        if self.requests == 0 and self.transport is not None:
            self.book.timed_out += 1
            self.transport.abort()

    def request_began(self) -> None:
        self.requests += 1
        self._disarm()

    def request_ended(self) -> None:
        self.requests = max(0, self.requests - 1)
        if self.requests == 0 and self.transport is not None and not self.transport.is_closing():
            self._arm()

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> None:
        self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.peer is None:  # refused at the door: uvicorn never saw it
            return
        if self.book.open.get(self.peer) is self:
            del self.book.open[self.peer]
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class Server(uvicorn.Server):
    """uvicorn's server, which first tells the app to end its runs when asked to stop."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_stop = on_stop

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGINT or SIGTERM: cancel the runs in flight, then shut down as uvicorn does."""
        with contextlib.suppress(Exception):  # a signal handler must not raise
            self.on_stop()
        super().handle_exit(sig, frame)


def config(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    connections: Connections,
) -> uvicorn.Config:
    """uvicorn's configuration for `app` with every bound set."""
    return uvicorn.Config(
        connections.app(app),
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        http=connections.protocol,  # type: ignore[arg-type]
        timeout_keep_alive=IDLE_SECONDS,
        h11_max_incomplete_event_size=MAX_HEAD,
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,
    )
