"""What every request passes before a route sees it, and every reply on its way out.

`Guard` is ASGI middleware around the whole app, so a route added later inherits it. It
refuses what a web page on another origin could make a browser send (a body that is not JSON,
which needs no preflight; an Origin not allowed; a Host that is not this machine's, as DNS
rebinding sends), bounds the body (size, time to arrive, JSON nesting, lone surrogates) and
blanks every known key out of what goes back.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llamaberry.core.redact import redact

# The largest request body taken (a long conversation is well under it).
MAX_BODY = 4 * 1024 * 1024
# The deepest nesting of arrays and objects a JSON body may have.
MAX_DEPTH = 64
# Seconds a client has to send the whole body once its headers are in.
BODY_SECONDS = 30.0
# Methods that carry a body a route reads.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class Refused(Exception):
    """A request answered with an error before any route runs."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def body(self) -> bytes:
        error = {"message": self.message, "type": "invalid_request_error", "param": None}
        return json.dumps({"error": error | {"code": self.code}}).encode()


def is_loopback_name(host: str) -> bool:
    """True for a Host header's name that can only mean this machine."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8000
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:  # localhost:8000
        name = name.partition(":")[0]
    name = name.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_json(body: bytes, max_depth: int = MAX_DEPTH) -> None:
    """`Refused` (400) for a body that is not JSON, nests deeper than `max_depth`, or holds a
    string with a lone surrogate (which no upstream can be sent)."""
    try:
        value = json.loads(body)
    except RecursionError:
        raise Refused(
            400, f"The JSON body nests deeper than {max_depth} levels.", "too_deep"
        ) from None
    except ValueError:
        raise Refused(400, "The request body is not valid JSON.", "invalid_json") from None
    # Walked without recursion, so the depth is measured before anything else recurses on it.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                _check_text(item)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > max_depth:
            raise Refused(
                400, f"The JSON body nests deeper than {max_depth} levels.", "too_deep"
            ) from None
        children: Iterable[Any] = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused(
            400, "The request holds a lone surrogate (\\ud800-\\udfff), not text.", "invalid_text"
        ) from None


class Guard:
    """ASGI middleware: the checks every request passes, and redaction of every reply."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        origins: Sequence[str] = (),
        loopback: bool = True,
        max_body: int = MAX_BODY,
        body_seconds: float = BODY_SECONDS,
    ) -> None:
        self.app = app
        self.origins = frozenset(o.rstrip("/") for o in origins)
        self.loopback = loopback
        self.max_body = max_body
        self.body_seconds = body_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self.check_headers(scope)
            if scope["method"] in _BODY_METHODS:
                body = await self.read_body(scope, receive)
                check_json(body)
                receive = _replay(body, receive)
        except Refused as refused:
            await _answer(send, refused)
            return
        await self.app(scope, receive, _redacting(send))

    def check_headers(self, scope: Scope) -> None:
        """`Refused` for a Host, Origin or Content-Type a browser page could abuse."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host")
        if self.loopback and host is not None and not is_loopback_name(host):
            raise Refused(
                421,
                f"This server answers to localhost only, not to Host '{host[:100]}'.",
                "host_not_allowed",
            )
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/") not in self.origins:
            raise Refused(
                403,
                f"Requests from the web origin '{origin[:100]}' are not allowed "
                "(llamaberry serve --cors-origin ORIGIN allows one).",
                "origin_not_allowed",
            )
        if scope["method"] in _BODY_METHODS:
            kind = headers.get("content-type", "").partition(";")[0].strip().lower()
            if kind != "application/json":
                raise Refused(
                    415, "Send the body as JSON, with Content-Type: application/json.", "not_json"
                )

    async def read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body, refused (413) past `max_body` or (408) when it takes too long."""
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise Refused(413, self._too_large(), "body_too_large")
        parts: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise Refused(400, "The client went away.", "disconnected")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        raise Refused(413, self._too_large(), "body_too_large")
                    parts.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(parts)
        except TimeoutError:
            raise Refused(
                408, f"The body did not arrive within {self.body_seconds:g} s.", "body_timeout"
            ) from None

    def _too_large(self) -> str:
        return f"The request body is over {self.max_body:,} bytes."


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body read already, then what the client sends next (its
    disconnect, which the routes watch for)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send: Send, refused: Refused) -> None:
    body = refused.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if refused.status in (408, 413):  # the rest of the body is not read: do not wait for it
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _redacting(send: Send) -> Send:
    """`send` with every known key blanked out of the body: a whole body with its length set
    again, a streamed one message by message (a stream's own text is redacted where it is
    written, since a key may be split between two messages)."""
    held: Message | None = None

    async def redacting(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start":
            held = message  # sent with the first body, whose length may change
            return
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            clean = _redacted(body)
            if clean is not body:
                message = {**message, "body": clean}
                if held is not None and not message.get("more_body", False):
                    headers = [(k, v) for k, v in held["headers"] if k != b"content-length"]
                    headers.append((b"content-length", str(len(clean)).encode()))
                    held = {**held, "headers": headers}
        if held is not None:
            await send(held)
            held = None
        await send(message)

    return redacting


def _redacted(body: bytes) -> bytes:
    """`body` with any known key or run of one blanked (the same bytes when there is none)."""
    if not body:
        return body
    text = body.decode("utf-8", "replace")
    clean = redact(text)
    return body if clean == text else clean.encode()
