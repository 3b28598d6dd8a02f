"""The fake server's wire: reading HTTP/1.1 requests (chunked bodies included), writing
responses, SSE and chunked framing, error bodies in Groq's shape, and the TLS certificate."""

from __future__ import annotations

import asyncio
import http
import json
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_MAX_BODY = 32 * 1024 * 1024


_STREAM_LIMIT = 1024 * 1024


def _format_duration(seconds: float) -> str:
    """Groq's duration style: ``120ms``, ``7.66s``, ``2m59.56s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    seconds = round(seconds, 2)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{int(hours)}h" if hours else ""
    if hours or minutes:
        out += f"{int(minutes)}m"
    return out + f"{secs:.2f}".rstrip("0").rstrip(".") + "s"


def _error(message: str, type_: str, code: str | int | None = None, **extra: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": type_}
    if code is not None:
        error["code"] = code
    error.update(extra)
    return {"error": error}


_DEFAULT_FAULT_MESSAGES = {
    400: ("Bad request", "invalid_request_error", None),
    401: ("Invalid API Key", "invalid_request_error", "invalid_api_key"),
    403: ("Forbidden", "permissions_error", None),
    404: ("Not found", "invalid_request_error", "not_found"),
    413: ("Request Entity Too Large", "invalid_request_error", "request_too_large"),
    422: ("Unprocessable Entity", "invalid_request_error", None),
    429: ("Rate limit reached. Please try again later.", "requests", "rate_limit_exceeded"),
    498: ("Flex tier capacity exceeded. Please try again later.", "capacity_exceeded", None),
    500: ("Internal Server Error", "internal_server_error", None),
    502: ("Bad Gateway", "internal_server_error", None),
    503: ("Service Unavailable", "internal_server_error", "service_unavailable"),
}


def _fault_body(code: int) -> dict[str, Any]:
    fallback_type = "internal_server_error" if code >= 500 else "invalid_request_error"
    message, type_, err_code = _DEFAULT_FAULT_MESSAGES.get(
        code, (_reason(code), fallback_type, None)
    )
    return _error(message, type_, err_code)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


_DONE = b"data: [DONE]\n\n"


_LAST_CHUNK = b"0\r\n\r\n"


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool
    origin: str | None = None  # of a whole-URL target, as a forward proxy is sent


class _Drop(Exception):
    """Raised to end a connection without any further bytes."""


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _HttpError(400, "Incomplete request head") from None
        return None  # the client closed an idle keep-alive connection
    except asyncio.LimitOverrunError:
        raise _HttpError(431, "Request header fields too large") from None

    lines = head[:-4].decode("latin-1").split("\r\n")
    while lines and not lines[0]:  # tolerate stray CRLFs between pipelined requests
        lines.pop(0)
    parts = lines[0].split(" ") if lines else []
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _HttpError(400, "Malformed request line")
    method, target, version = parts
    origin = None
    if target.startswith(("http://", "https://")):  # the absolute form a proxy is sent
        scheme, _, rest = target.partition("://")
        authority, _, path = rest.partition("/")
        origin, target = f"{scheme}://{authority}", "/" + path

    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _HttpError(400, "Malformed header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value

    connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection

    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    transfer_encoding = headers.get("transfer-encoding", "").lower()
    if transfer_encoding:
        if transfer_encoding.rsplit(",", 1)[-1].strip() != "chunked":
            raise _HttpError(501, "Unsupported transfer encoding")
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        length_text = headers["content-length"]
        if not length_text.isdigit():
            raise _HttpError(400, "Invalid Content-Length")
        length = int(length_text)
        if length > _MAX_BODY:
            raise _HttpError(413, "Request body too large")
        body = await reader.readexactly(length) if length else b""
    else:
        body = b""
    return _Request(method, target.split("?", 1)[0], headers, body, keep_alive, origin)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _HttpError(400, "Malformed chunk size") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # skip trailers
                pass
            return bytes(body)
        if len(body) + size > _MAX_BODY:
            raise _HttpError(413, "Request body too large")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise _HttpError(400, "Malformed chunk terminator")


def _head(status: int, headers: dict[str, str], keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    lines.append(f"connection: {'keep-alive' if keep_alive else 'close'}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send(
    writer: asyncio.StreamWriter,
    status: int,
    payload: dict[str, Any] | bytes,
    keep_alive: bool,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> None:
    body = payload if isinstance(payload, bytes) else _dumps(payload)
    all_headers = {"content-type": content_type, "content-length": str(len(body))}
    if headers:
        all_headers.update(headers)
    writer.write(_head(status, all_headers, keep_alive) + body)
    await writer.drain()


def _certificate(names: Sequence[str]) -> tuple[ssl.SSLContext, str]:
    """A server TLS context with a certificate for ``names`` from a new throwaway CA, and the
    path of that CA's PEM file (in a fresh temporary directory)."""
    try:
        import trustme  # only HTTPS needs it, so plain-HTTP users need not install it
    except ImportError:
        raise ImportError(
            "FakeServer(tls=...) needs the trustme package: pip install trustme"
        ) from None
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    ca_file = os.path.join(tempfile.mkdtemp(prefix="llamaberry-fake-ca-"), "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    return context, ca_file
