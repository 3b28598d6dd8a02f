"""How calls reach the provider: the SDK's own client over its aiohttp backend
(`DefaultAioHttpClient`, the SDKs' `aiohttp` extra), with bounds on what an upstream may send.

Only the SDKs' and httpx's public API is used: the SDK client is built with `http_client=`, a
call goes out through the SDK client's public `post` (see sdk.py), and the
bounds sit in `send`, the public method every request of the HTTP client passes through, so
they hold for proxies (which httpx picks from the environment), redirects and model lists alike.

The bounds (what a chat server never needs to exceed):
- a reply body, streamed or whole, is at most `MAX_REPLY_BYTES`: past that the call fails
  with one line and is not retried;
- an error body is read up to `MAX_ERROR_BYTES` and cut there (its status and headers still
  say what happened);
- calls ask for an uncompressed reply; a server that compresses anyway (gzip or deflate) is
  decoded a bounded piece at a time, within the same limits, so a small bomb cannot grow; any
  other encoding (br, zstd) fails the call with `UnreadableEncoding`, which names it;
- a redirect's body is never read.
"""

from __future__ import annotations

import base64
import functools
import os
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from llamaberry.core.errors import InputError
from llamaberry.providers.streams import ReplyTooLarge, UnreadableEncoding

# A new connection must be made within this many seconds when little else is going on...
CONNECT_TIMEOUT = 10.0
# ...and this much longer for every call in flight: one event loop opening a burst of connections
# (a thousand runs started at once) serves them one by one, each a socket and, on a real
# endpoint, a TLS handshake of its own; on a busy machine the last waited past 10 s and was
# retried (194 of 4000 calls at load 13), though nothing was wrong with the endpoint.
CONNECT_TIMEOUT_PER_CALL = 0.05
# The most a reply body (a stream's bytes, or a whole JSON reply) may hold: a reply at a
# model's largest output (about 128K tokens) streams about 30 MB of events.
MAX_REPLY_BYTES = 32 << 20
# The most of an error body that is read; an error's message is a few hundred bytes.
MAX_ERROR_BYTES = 1 << 20
# Redirects followed for one request (httpx's own default is 20).
MAX_REDIRECTS = 5
# A compressed reply is inflated at most this much at a time.
_INFLATE_STEP = 1 << 16
# Seconds an idle connection is kept for the next call.
KEEPALIVE_EXPIRY = 5.0


def connect_timeout(in_flight: int, timeout: float) -> float:
    """Seconds a call may take to open a connection with `in_flight` calls under way (itself
    included), never more than the call's whole `timeout`."""
    return min(timeout, CONNECT_TIMEOUT + CONNECT_TIMEOUT_PER_CALL * max(0, in_flight - 1))


def build_sdk(
    sdk: Any,
    http_client: Any,
    http: Any,
    *,
    api_key: str,
    base_url: str | None,
    timeout: float,
    connections: int,
    keep_alive: bool,
) -> Any:
    """An SDK client with its own retries off, over `http_client` (the SDK's
    `DefaultAioHttpClient`) bounded as this module says, with `connections` connections.

    Both SDKs take the same arguments; only the HTTP library differs (`http` is the httpx
    module the SDK is built on: groq uses httpx, openai its fork httpx2).
    """
    client = bounded_client(http_client, http)(
        limits=http.Limits(
            max_connections=connections,
            max_keepalive_connections=connections if keep_alive else 0,
            # aiohttp keeps every released connection; one kept no time is never reused.
            keepalive_expiry=KEEPALIVE_EXPIRY if keep_alive else 0.0,
        ),
        verify=_ssl_context(http),
        headers={"accept-encoding": "identity"},
    )
    return sdk(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        timeout=http.Timeout(timeout, connect=connect_timeout(1, timeout)),
        http_client=client,
    )


@functools.cache
def _ssl_context(http: Any) -> Any:
    """One verified TLS context per HTTP library, shared by every client: building one reads
    the CA bundle (about 25 ms), which each SDK client would otherwise do for itself."""
    try:
        return http.create_ssl_context()
    except OSError as error:  # ssl.SSLError too: a CA file that is missing or not PEM
        variable = "SSL_CERT_FILE" if os.environ.get("SSL_CERT_FILE") else "SSL_CERT_DIR"
        where = os.environ.get(variable, "")
        reason = error.strerror or str(error)
        raise InputError(
            f"Could not load CA certificates from {variable} ({where}): {reason}."
        ) from None


@functools.cache
def bounded_client(base: Any, http: Any, reply_limit: int = MAX_REPLY_BYTES) -> Any:
    """A subclass of the HTTP client class `base` (the SDK's, or httpx's own) whose every
    response is bounded (see the module's docstring), a reply body at `reply_limit` bytes.
    `http` is the httpx module `base` is built on."""
    stream_type = _bounded_stream_type(http)

    class BoundedClient(base):  # type: ignore[misc, valid-type]
        async def send(self, request: Any, *, stream: bool = False, **kwargs: Any) -> Any:
            if request.url.userinfo:
                _credentials_as_basic_auth(request)
            follow = kwargs.pop("follow_redirects", None)
            if not isinstance(follow, bool):  # httpx's request() passes "the client's default"
                follow = self.follow_redirects
            for _ in range(MAX_REDIRECTS + 1):
                response = await super().send(
                    request, stream=True, follow_redirects=False, **kwargs
                )
                following = response.next_request if follow else None
                if following is None:
                    break
                await response.aclose()  # a redirect's body is never read
                request = following
            else:
                raise http.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects", request=request)
            try:
                bounded = _bounded(response, request, http, stream_type, reply_limit)
                if not stream:
                    await bounded.aread()
            except BaseException:
                await response.aclose()
                raise
            return bounded

    BoundedClient.__name__ = BoundedClient.__qualname__ = f"Bounded{base.__name__.lstrip('_')}"
    return BoundedClient


def _credentials_as_basic_auth(request: Any) -> None:
    """Send the credentials of a base URL (`https://user:pass@gateway`) as basic auth, as httpx
    does, in place of the key's header; and take them off the URL, which aiohttp refuses to
    take together with an authorization header."""
    url = request.url
    pair = f"{url.username}:{url.password}".encode()
    request.headers["authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    request.url = url.copy_with(userinfo=b"")


def _bounded(response: Any, request: Any, http: Any, stream_type: type, reply_limit: int) -> Any:
    """`response` with its body read through our bounds (`reply_limit` bytes for a reply), and
    decoded here if it came compressed (so the HTTP library does not inflate it unbounded)."""
    headers = response.headers.copy()
    encoding = headers.pop("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        raise UnreadableEncoding(encoding)
    error = response.status_code >= 400
    limit = min(MAX_ERROR_BYTES, reply_limit) if error else reply_limit
    declared = headers.get("content-length", "")
    if encoding != "identity":
        headers.pop("content-length", None)  # the length of what was sent, not of the text
    elif declared.isdigit() and int(declared) > limit and not error:
        raise ReplyTooLarge(f"the reply says it is {int(declared):,} bytes long")
    return http.Response(
        response.status_code,
        headers=headers,
        stream=stream_type(response, encoding, limit, cut=error),
        request=request,
        extensions=response.extensions,
    )


@functools.cache
def _bounded_stream_type(http: Any) -> type:
    """A response body for the httpx module `http` (a subclass of its `AsyncByteStream`) that
    reads another response's raw bytes, inflates them when they came compressed, and stops at
    a limit: by raising `ReplyTooLarge`, or, with `cut`, by ending there (an error body)."""

    class BoundedStream(http.AsyncByteStream):  # type: ignore[misc, name-defined]
        def __init__(self, response: Any, encoding: str, limit: int, *, cut: bool) -> None:
            self.response = response
            self.limit = limit
            self.cut = cut
            self.inflate: Any = None
            if encoding in ("gzip", "x-gzip"):
                self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            elif encoding == "deflate":
                self.inflate = zlib.decompressobj()

        async def __aiter__(self) -> AsyncIterator[bytes]:
            total = 0
            async for raw in self.response.aiter_raw():
                for piece in self._decoded(raw):
                    total += len(piece)
                    if total > self.limit:
                        if not self.cut:
                            raise ReplyTooLarge(f"the reply is over {self.limit:,} bytes")
                        yield piece[: len(piece) - (total - self.limit)]
                        return
                    yield piece

        def _decoded(self, raw: bytes) -> Iterator[bytes]:
            inflate = self.inflate
            if inflate is None:
                yield raw
                return
            try:
                data = raw
                while data:
                    piece = inflate.decompress(data, _INFLATE_STEP)
                    if piece:
                        yield piece
                    data = inflate.unconsumed_tail
            except zlib.error as error:
                raise http.DecodingError(f"a compressed reply could not be read: {error}") from None

        async def aclose(self) -> None:
            await self.response.aclose()

    return BoundedStream
