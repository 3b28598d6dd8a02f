"""How calls reach the provider: the SDK client built over our own HTTP/1.1 client (wire.py), and
`_Wire`, which sends each call through it without the SDK's per-request machinery.

Everything here is about the HTTP path, apart from what a call means (that is `sdk.py`), so the
path can change without touching the retry loop, the errors or the providers.
"""

from __future__ import annotations

import base64
import functools
import importlib
import logging
import os
from dataclasses import dataclass
from typing import Any

import orjson

from llamaberry.core.errors import InputError
from llamaberry.providers.wire import Pool, Transport

# A new connection must be made within this many seconds when little else is going on...
CONNECT_TIMEOUT = 10.0
# ...and this much longer for every call in flight: one event loop opening a burst of connections
# (a thousand runs started at once) serves them one by one, each a socket and, on a real
# endpoint, a TLS handshake of its own; on a busy machine the last waited past 10 s and was
# retried (194 of 4000 calls at load 13), though nothing was wrong with the endpoint.
CONNECT_TIMEOUT_PER_CALL = 0.05


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
    """An SDK client with its own retries off and a pool of `connections` connections.

    Both SDKs take the same arguments; only the HTTP library differs (`http` is the httpx
    module the SDK is built on: groq uses httpx, openai its fork httpx2).
    """
    client = http_client(
        limits=http.Limits(
            max_connections=connections,
            max_keepalive_connections=connections if keep_alive else 0,
        ),
        verify=_ssl_context(http),
    )
    # Requests go over our own HTTP/1.1 client (see wire.py) in place of the HTTP client's
    # default transport. Set after construction, because httpx reads the proxies named in
    # the environment (and NO_PROXY) only when it builds its own: those still go through
    # the transports it made for them, with the limits and TLS context above.
    client._transport = Transport(
        http,
        ssl_context=_ssl_context(http),
        limit=connections,
        keep_alive=connections if keep_alive else 0,
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
    """One verified TLS context per HTTP library, shared by every pool: building one reads the
    CA bundle (about 25 ms), which each SDK client would otherwise do for itself."""
    try:
        return http.create_ssl_context()
    except OSError as error:  # ssl.SSLError too: a CA file that is missing or not PEM
        variable = "SSL_CERT_FILE" if os.environ.get("SSL_CERT_FILE") else "SSL_CERT_DIR"
        where = os.environ.get(variable, "")
        reason = error.strerror or str(error)
        raise InputError(
            f"Could not load CA certificates from {variable} ({where}): {reason}."
        ) from None


@dataclass(slots=True)
class _Wire:
    """How a call goes out through one SDK client, without the SDK's per-request machinery.

    The SDK builds one request for the chat-completions path when the pool opens: its URL,
    its auth and platform headers on top of its HTTP client's own, its timeouts. Every call
    then sends that request's URL and headers with its own body, and a refused call still
    raises the SDK's typed error. What is skipped is the work the SDK and its HTTP stack repeat
    for every request to arrive at the same answer: a pydantic options model, the typed-dict
    transform of the body, the headers and URL merged again, the HTTP client's cookie,
    redirect and auth steps, and a general-purpose HTTP/1.1 and connection-pool layer under
    them. Calls go straight into the pool of our own HTTP/1.1 client (wire.py), which is also
    the SDK's HTTP client's transport; a URL the environment sends through a proxy goes to the
    proxy transport that client built for it. (An SDK whose key could change between requests,
    a key provider, would be read once per pool: the engine gives it a fixed key.)
    """

    sdk: Any
    http: Any  # the httpx module the SDK is built on
    transport: Any
    url: Any
    headers: Any
    extensions: dict[str, Any]
    log: logging.Logger  # the HTTP library's own, where it notes every request at INFO
    pool: Pool | None  # our own HTTP/1.1 client, where the SDK's would send plainly
    head: bytes  # with `pool`: the request line and headers, all but the body's length

    @classmethod
    def of(cls, sdk: Any, http: Any, path: str) -> _Wire:
        """The wire of `sdk`, for requests to `path` below its base URL."""
        models = importlib.import_module(type(sdk).__module__.split(".")[0] + "._models")
        options = models.FinalRequestOptions.construct(method="post", url=path, json_data={})
        template = sdk._build_request(options)
        headers = http.Headers(template.headers)
        headers.pop("content-length", None)  # each call's own body sets its own
        if "x-stainless-async" in headers:  # worked out where the pool opened, maybe a thread
            headers["x-stainless-async"] = "async:asyncio"
        url = template.url
        if url.username or url.password:
            # As the HTTP client's own auth step does: credentials in the base URL (a gateway's
            # basic auth) are sent as basic auth, in place of the key's header.
            pair = f"{url.username}:{url.password}".encode()
            headers["authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        client = sdk._client  # the HTTP client we handed the SDK (see `build_sdk`)
        transport = client._transport_for_url(url)
        pool = transport.pool_for(url) if isinstance(transport, Transport) else None
        head = b""
        if pool is not None:
            # Our client reads only what it asked for: replies uncompressed.
            lines = [b"POST " + url.raw_path + b" HTTP/1.1\r\n"]
            for name, value in headers.raw:
                if name.lower() == b"accept-encoding":
                    value = b"identity"
                lines.append(name + b": " + value + b"\r\n")
            head = b"".join(lines)
        return cls(
            sdk=sdk,
            http=http,
            transport=transport,
            url=url,
            headers=headers,
            extensions=dict(template.extensions),
            log=logging.getLogger(http.__name__),
            pool=pool,
            head=head,
        )

    async def send(self, body: dict[str, Any], stream: bool, connect: float) -> Any:
        """Post `body` as JSON and return the response, its body unread; a refused request
        raises the SDK's typed error for its status, as the SDK itself would. A new connection
        must be made within `connect` seconds."""
        content = orjson.dumps({**body, "stream": stream})
        if self.pool is None:
            return await self._send_by_transport(content, connect)
        response: Any = await self.pool.send(
            b"%sContent-Length: %d\r\n\r\n%s" % (self.head, len(content), content), connect
        )
        self._log(response)
        if response.is_redirect or response.status_code >= 400:
            try:
                received = await response.aread()
            finally:
                await response.aclose()
            request = self._request(content, connect)
            if response.is_redirect:
                # Rare (a proxy sending http to https, say): the SDK's HTTP client follows it.
                response = await self.sdk._client.send(request, stream=True)
                if response.status_code >= 400:
                    await self._refuse(response)
                return response
            raise self.sdk._make_status_error_from_response(
                self.http.Response(
                    response.status_code,
                    headers=response.raw_headers,
                    content=received,
                    request=request,
                )
            )
        return response

    async def _send_by_transport(self, content: bytes, connect: float) -> Any:
        request = self._request(content, connect)
        response = await self.transport.handle_async_request(request)
        response.request = request
        self._log(response)
        if response.is_redirect:
            await response.aclose()
            response = await self.sdk._client.send(request, stream=True)
        if response.status_code >= 400:
            await self._refuse(response)
        return response

    def _request(self, content: bytes, connect: float) -> Any:
        timeouts = self.extensions.get("timeout")
        extensions = self.extensions
        if isinstance(timeouts, dict) and timeouts.get("connect") != connect:
            extensions = {**extensions, "timeout": {**timeouts, "connect": connect}}
        return self.http.Request(
            "POST", self.url, headers=self.headers, content=content, extensions=extensions
        )

    async def _refuse(self, response: Any) -> None:
        try:
            await response.aread()
        finally:
            await response.aclose()
        raise self.sdk._make_status_error_from_response(response)

    def _log(self, response: Any) -> None:
        if self.log.isEnabledFor(logging.INFO):  # the line the HTTP client would have logged
            self.log.info(
                'HTTP Request: %s %s "%s %d %s"',
                "POST",
                self.url,
                response.http_version,
                response.status_code,
                response.reason_phrase,
            )
