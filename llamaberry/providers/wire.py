"""A lean HTTP/1.1 client for chat-completion calls, on asyncio's own transports.

At a hundred concurrent runs, about half of the engine's CPU went to the general-purpose HTTP
stack under the SDKs (httpx, httpcore, h11 and anyio): per streamed piece a state machine, a
cancel scope and several layers of wrappers, and per request a pool that scans every
connection. A chat call needs little of that: one POST with a known set of headers, and a
reply read off one keep-alive connection. This module does only that, and leaves everything
else where it was: the SDK still builds the request (URL, key, headers), a refused call still
raises the SDK's typed error, and anything out of the ordinary (a proxy, a redirect, HTTP/2)
still goes through the SDK's own HTTP client (see `_Wire` in transport.py).

What it speaks: HTTP/1.1 over TCP or TLS (asyncio's TLS, with the SDK's verified context),
bodies framed by chunked transfer encoding, by Content-Length or by the connection's close,
gzip and deflate if a server compresses although asked not to, keep-alive with an idle expiry.
Errors are raised as the SDK's HTTP library raises them (`ConnectError`, `ConnectTimeout`,
`ReadError`, `RemoteProtocolError`), so they are read the same way upstream.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import zlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

# Reading pauses when this much of a reply is waiting to be read.
_HIGH_WATER = 1 << 20
# A response head, or a chunk-size line, longer than this is not a chat server's.
_MAX_HEAD = 1 << 16
_NO_BODY_STATUS = frozenset({204, 304})

# What a connection is reading.
_IDLE, _HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(
    9
)


class _ProtocolError(Exception):
    """The server's bytes are not HTTP/1.1 as we read it."""


class Head:
    """A response's status line and headers."""

    __slots__ = ("headers", "http_version", "raw_headers", "reason_phrase", "status_code")

    def __init__(self, status: int, reason: str, version: str, raw: list[tuple[str, str]]):
        self.status_code = status
        self.reason_phrase = reason
        self.http_version = version
        self.raw_headers = raw
        # Lower-case names, a repeated header's values joined by commas: as `dict(headers)` of
        # an httpx response reads.
        headers: dict[str, str] = {}
        for name, value in raw:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers = headers


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: sends one request at a time and parses its response as the
    bytes arrive, handing the body to whoever reads it."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False  # by either side; never reused once set
        self.idle_since = 0.0
        self.reusable = False  # whether the current response leaves it fit for another
        self.epoch = pool.epoch  # which of the pool's event loops it belongs to
        self.counted = True  # whether the pool still counts it as open
        self._state = _IDLE
        self._rest = b""  # bytes received that do not yet make a whole unit to parse
        self._remaining = 0  # of the Content-Length, or of the current chunk
        self._head: asyncio.Future[Head] | None = None
        self._pieces: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self._decoder: Any = None
        self._decode = True
        self._bodiless = False
        self._paused = False

    # -- asyncio's side ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._state in (_IDLE, _DONE):
            # Nothing is expected between responses; a server that sends anything there is
            # not one to send the next request to.
            self.reusable = False
            if self._state == _IDLE:
                self.close()
            return
        if self._rest:
            data = self._rest + data
            self._rest = b""
        try:
            self._parse(data)
        except (_ProtocolError, ValueError, zlib.error) as error:
            self._fail(self.pool.http.RemoteProtocolError(f"malformed HTTP response: {error}"))
            self.abort()

    def eof_received(self) -> bool:
        return False  # let the transport close; connection_lost says what that means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        http = self.pool.http
        if self._state == _UNTIL_CLOSE:
            self._finish()
        elif self._state == _HEAD:
            self._fail(http.RemoteProtocolError("Server disconnected without sending a response."))
        elif self._state not in (_IDLE, _DONE):
            self._fail(
                http.ReadError(str(exc))
                if exc
                else http.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                )
            )
        self.pool.lost(self)

    # -- our side ------------------------------------------------------------------------------

    async def request(self, data: bytes, *, decode: bool = True, bodiless: bool = False) -> Head:
        """Send one whole request and wait for its response's head. With `decode`, a body the
        server compressed is handed on decompressed; `bodiless` is for a HEAD request, whose
        response has headers only."""
        assert self.transport is not None and self._state == _IDLE
        if self.closed:  # gone since it was taken from the pool
            raise self.pool.http.RemoteProtocolError("the connection closed before the request")
        self._state = _HEAD
        self._error = None
        self._decoder = None
        self._decode = decode
        self._bodiless = bodiless
        self._head = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self._head

    async def body(self) -> AsyncIterator[bytes]:
        """The response's body, piece by piece as it arrives (decoded if it was compressed)."""
        pieces = self._pieces
        while True:
            if pieces:
                piece = pieces.popleft()
                self._buffered -= len(piece)
                if self._paused and self._buffered < _HIGH_WATER // 2 and self.transport:
                    self._paused = False
                    self.transport.resume_reading()
                yield piece
            elif self._state == _DONE:
                return
            elif self._error is not None:
                raise self._error
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None

    @property
    def finished(self) -> bool:
        """Whether the whole response has been received."""
        return self._state == _DONE

    def ready_for_next(self) -> None:
        """Make ready for the next request, the last response having been read through."""
        self._state = _IDLE

    def close(self) -> None:
        """Close politely (a TLS connection says goodbye); for connections between requests."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once: the server sees it go and stops writing."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- parsing ---------------------------------------------------------------------------------

    def _parse(self, data: bytes) -> None:
        while data:
            state = self._state
            if state == _CHUNK_SIZE:
                end = data.find(b"\r\n")
                if end < 0:
                    self._keep(data)
                    return
                size = int(data[:end].split(b";", 1)[0], 16)
                data = data[end + 2 :]
                if size:
                    self._remaining = size
                    self._state = _CHUNK_DATA
                else:
                    self._state = _TRAILER
            elif state == _CHUNK_DATA:
                left = self._remaining
                if len(data) <= left:
                    self._deliver(data)
                    self._remaining = left - len(data)
                    if not self._remaining:
                        self._state = _CHUNK_END
                    return
                self._deliver(data[:left])
                data = data[left:]
                self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(data) < 2:
                    self._rest = data
                    return
                if data[:2] != b"\r\n":
                    raise _ProtocolError("a chunk did not end where its size said")
                data = data[2:]
                self._state = _CHUNK_SIZE
            elif state == _LENGTH:
                left = self._remaining
                if len(data) < left:
                    self._deliver(data)
                    self._remaining = left - len(data)
                    return
                self._deliver(data[:left])
                self._finish()
                if len(data) > left:  # more than the length said: do not trust what follows
                    self.reusable = False
                return
            elif state == _HEAD:
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    self._keep(data)
                    return
                head, data = data[:end], data[end + 4 :]
                self._read_head(head)
            elif state == _TRAILER:
                if data.startswith(b"\r\n"):
                    data = data[2:]
                else:
                    end = data.find(b"\r\n\r\n")
                    if end < 0:
                        self._keep(data)
                        return
                    data = data[end + 4 :]
                self._finish()
                if data:
                    self.reusable = False
                return
            elif state == _UNTIL_CLOSE:
                self._deliver(data)
                return
            else:
                return

    def _keep(self, data: bytes) -> None:
        if len(data) > _MAX_HEAD:
            raise _ProtocolError("a header or chunk-size line is too long")
        self._rest = data

    def _read_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise _ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        version, status = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        if 100 <= status < 200:
            return  # an interim response (103 Early Hints, say): the real one follows
        raw: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise _ProtocolError(f"a header line without a colon: {line[:80]!r}")
            raw.append((name.strip().lower(), value.strip()))
        response = Head(status, reason, version, raw)
        headers = response.headers
        connection = headers.get("connection", "").lower()
        self.reusable = (
            "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        )
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if not self._decode or encoding == "identity":
            pass
        elif encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        else:
            raise _ProtocolError(f"the reply is in an encoding we did not ask for: {encoding}")
        if self._bodiless or status in _NO_BODY_STATUS:
            self._finish()
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = _CHUNK_SIZE
        elif "content-length" in headers:
            self._remaining = int(headers["content-length"])
            self._state = _LENGTH
            if not self._remaining:
                self._finish()
        else:
            self._state = _UNTIL_CLOSE
            self.reusable = False
        if self._head is not None and not self._head.done():
            self._head.set_result(response)

    def _deliver(self, piece: bytes) -> None:
        if self._decoder is not None:
            piece = self._decoder.decompress(piece)
            if not piece:
                return
        self._pieces.append(piece)
        self._buffered += len(piece)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            self._decoder = None
            if tail:
                self._pieces.append(tail)
        self._state = _DONE
        self._wake()

    def _fail(self, error: Exception) -> None:
        self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Response:
    """A response whose body is read as it arrives; closing it hands its connection back."""

    def __init__(self, head: Head, connection: Connection) -> None:
        self.status_code = head.status_code
        self.reason_phrase = head.reason_phrase
        self.http_version = head.http_version
        self.headers = head.headers
        self.raw_headers = head.raw_headers
        self._connection: Connection | None = connection

    @property
    def is_redirect(self) -> bool:
        """Whether this is a redirect that says where to go."""
        return self.status_code in (301, 302, 303, 307, 308) and "location" in self.headers

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body, piece by piece as it arrives."""
        if self._connection is None:
            raise RuntimeError("the response is closed")
        return self._connection.body()

    async def aread(self) -> bytes:
        """The whole body."""
        return b"".join([piece async for piece in self.aiter_bytes()])

    async def aclose(self) -> None:
        """Give the connection back for the next call if the response was read through and
        the server keeps it open; otherwise drop it."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.pool.release(connection)


class Pool:
    """Keep-alive connections to one origin, at most `limit` of them at once; a call that
    finds them all busy waits for one."""

    def __init__(
        self,
        http: Any,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        limit: int,
        keep_alive: int,
        keepalive_expiry: float | None,
    ) -> None:
        self.http = http  # the SDK's HTTP library: its exception types are ours
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.limit = limit
        self.keep_alive = keep_alive  # how many idle connections are kept
        self.keepalive_expiry = keepalive_expiry
        self.loop: asyncio.AbstractEventLoop | None = None
        self.epoch = 0
        self._idle: list[Connection] = []  # the most recently used last
        self._open = 0  # connections open or being opened, idle ones included
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def send(
        self, data: bytes, connect_timeout: float, *, decode: bool = True, bodiless: bool = False
    ) -> Response:
        """Send one whole request on a free connection and return its response, the head
        read and the body not yet (see `Connection.request` for the options)."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            self._move_to(loop)
        connection = await self._acquire(connect_timeout)
        try:
            head = await connection.request(data, decode=decode, bodiless=bodiless)
        except BaseException:
            self.release(connection, drop=True)
            raise
        return Response(head, connection)

    def release(self, connection: Connection, *, drop: bool = False) -> None:
        """Take back a connection whose call is over, keeping it for the next if it can be."""
        if not connection.closed:
            if drop or not connection.finished or not connection.reusable:
                connection.abort()
            elif len(self._idle) >= self.keep_alive:
                connection.close()
            else:
                connection.ready_for_next()
                connection.idle_since = self.loop.time() if self.loop else 0.0
                self._idle.append(connection)
                self._wake()
                return
        self._forget(connection)

    def lost(self, connection: Connection) -> None:
        """The connection closed, from either side."""
        self._forget(connection)

    def close(self) -> None:
        """Close the idle connections; busy ones close when their calls end."""
        self.keep_alive = 0
        idle, self._idle = self._idle, []
        try:
            here = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            here = False
        for connection in idle:
            if here:  # a transport is closed on its own loop; another loop's dies with it
                connection.close()
            self._forget(connection)

    # -- inside --------------------------------------------------------------------------------

    async def _acquire(self, connect_timeout: float) -> Connection:
        while True:
            connection = self._take_idle()
            if connection is not None:
                return connection
            if self._open < self.limit:
                self._open += 1
                try:
                    return await self._connect(connect_timeout)
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # we were woken for a free connection: pass it on
                else:
                    self._waiters.remove(waiter)
                raise

    def _take_idle(self) -> Connection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue  # its loss was counted when it closed
            expiry = self.keepalive_expiry
            if (
                expiry is not None
                and self.loop
                and self.loop.time() - connection.idle_since > expiry
            ):
                # Servers close idle connections after a while; one that waited this long
                # might be closing just as a request goes out.
                connection.close()
                self._forget(connection)
                continue
            return connection
        return None

    async def _connect(self, timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        http = self.http
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context is not None else None,
                )
        except TimeoutError:
            raise http.ConnectTimeout(f"no connection to {where} within {timeout:g}s") from None
        except OSError as error:  # refused, unreachable, unknown name, or TLS (ssl.SSLError)
            raise http.ConnectError(str(error) or type(error).__name__) from error
        return connection

    def _forget(self, connection: Connection) -> None:
        # Each connection is counted out once, whichever of its ends comes first.
        if not connection.counted or connection.epoch != self.epoch:
            return
        connection.counted = False
        if connection in self._idle:
            self._idle.remove(connection)
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _move_to(self, loop: asyncio.AbstractEventLoop) -> None:
        # Connections belong to the event loop that opened them. A client used from a new loop
        # (a second `asyncio.run`) starts afresh; the old loop's connections die with it.
        self.loop = loop
        self.epoch += 1
        self._idle = []
        self._open = 0
        self._waiters.clear()


class Transport:
    """Our pools behind the interface of an httpx transport, so the SDK's own requests (a
    model list, a followed redirect) share the connections the calls use.

    `http` is the httpx module the SDK is built on. Pools are kept per origin; `limit` and
    `keep_alive` (idle connections kept) apply to each.
    """

    def __init__(
        self,
        http: Any,
        *,
        ssl_context: ssl.SSLContext,
        limit: int,
        keep_alive: int,
        keepalive_expiry: float | None = 5.0,
    ) -> None:
        self.http = http
        self.ssl_context = ssl_context
        ssl_context.set_alpn_protocols(["http/1.1"])  # all we speak
        self.limit = limit
        self.keep_alive = keep_alive
        self.keepalive_expiry = keepalive_expiry
        self._pools: dict[tuple[str, str, int], Pool] = {}
        self._stream = _stream_type(http)

    def pool_for(self, url: Any) -> Pool:
        """The pool for `url`'s origin (an httpx URL)."""
        tls = url.scheme == "https"
        port = url.port or (443 if tls else 80)
        key = (url.scheme, url.host, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool(
                self.http,
                host=url.host,
                port=port,
                ssl_context=self.ssl_context if tls else None,
                limit=self.limit,
                keep_alive=self.keep_alive,
                keepalive_expiry=self.keepalive_expiry,
            )
        return pool

    async def handle_async_request(self, request: Any) -> Any:
        """Send an httpx request and return its httpx response, the body streamed."""
        http, url = self.http, request.url
        if url.scheme not in ("http", "https"):
            raise http.UnsupportedProtocol(f"the URL's protocol is not supported: {url}")
        content = b"".join([part async for part in request.stream])
        lines = [request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            if name.lower() not in (b"content-length", b"transfer-encoding"):
                lines += (name, b": ", value, b"\r\n")
        if content or request.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            lines.append(b"Content-Length: %d\r\n" % len(content))
        lines += (b"\r\n", content)
        timeouts = request.extensions.get("timeout") or {}
        connect = timeouts.get("connect") or 10.0
        read = timeouts.get("read")
        try:
            async with asyncio.timeout(read):
                response = await self.pool_for(url).send(
                    b"".join(lines), connect, decode=False, bodiless=request.method == "HEAD"
                )
        except TimeoutError:
            raise http.ReadTimeout(f"no response from {url.host} within {read:g}s") from None
        return http.Response(
            response.status_code,
            headers=response.raw_headers,
            stream=self._stream(response, read),
            extensions={
                "http_version": response.http_version.encode("ascii"),
                "reason_phrase": response.reason_phrase.encode("latin-1"),
            },
        )

    async def aclose(self) -> None:
        """Close every pool's idle connections."""
        for pool in self._pools.values():
            pool.close()


@functools.cache
def _stream_type(http: Any) -> type:
    """A response body as the httpx module `http` wants it: a subclass of its own
    `AsyncByteStream`, which reads our response with a time limit on each piece."""

    class Stream(http.AsyncByteStream):  # type: ignore[misc, name-defined]
        def __init__(self, response: Response, read: float | None) -> None:
            self._response = response
            self._read = read

        async def __aiter__(self) -> AsyncIterator[bytes]:
            pieces = self._response.aiter_bytes()
            while True:
                try:
                    async with asyncio.timeout(self._read):
                        piece = await anext(pieces)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise http.ReadTimeout(f"no data within {self._read:g}s") from None
                yield piece

        async def aclose(self) -> None:
            await self._response.aclose()

    return Stream
