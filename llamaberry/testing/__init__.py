"""A fake chat-completions server for tests that should exercise the real wire path.

``FakeServer`` is a small HTTP/1.1 server on ``127.0.0.1`` (ephemeral port) speaking just
enough of the Groq and OpenAI chat-completions APIs for the real ``groq`` and ``openai``
SDKs to talk to it: JSON and SSE streaming replies, usage, rate-limit headers, Groq-style
errors and scripted network faults. No network access and no real API key are involved.

Example::

    import groq
    import openai
    from llamaberry.testing import FakeServer, Fault, Reply

    async def test_retries_after_rate_limit():
        async with FakeServer() as server:  # runs in the current event loop
            server.enqueue(Fault.status(429, headers={"retry-after": "1"}))
            server.enqueue(Reply("a better draft", reasoning="the first one was vague"))
            client = groq.AsyncGroq(api_key="test", base_url=server.groq_base_url)
            ...  # code under test
            assert server.requests[-1].user == "write a haiku"

    def test_sync_code():
        with FakeServer(rpm_limit=30) as server:  # runs in a background thread
            client = openai.OpenAI(api_key="test", base_url=server.openai_base_url)
            ...

With llamaberry installed, pytest also gets a ``fake_server`` fixture that yields a
running thread-mode ``FakeServer()``.

``FakeServer(tls=True)`` serves HTTPS instead, with a certificate for ``127.0.0.1`` and
``localhost`` signed by a throwaway CA made for this server (it needs the ``trustme`` package).
The base URLs then start with ``https://``, and ``ca_file`` is the path of the CA's PEM file,
which a client must trust: ``SSL_CERT_FILE=<ca_file>`` for a process (httpx honours it), or
``ssl.create_default_context(cafile=server.ca_file)`` in code. ``tls=["localhost"]`` issues
the certificate for those names only, so a client connecting to ``127.0.0.1`` sees a name
mismatch. Each recorded request's ``tls`` names the TLS version it arrived over, and
``handshakes_failed`` counts the connections whose handshake failed (a client that does not
trust the certificate); ``connections_opened`` counts those too.

The server also answers as a plain forward proxy would be asked: a request whose target is a
whole URL (``POST http://elsewhere/v1/chat/completions``) is served as if for its path, and its
record's ``proxied_for`` says where it was addressed. Point ``HTTP_PROXY`` at it to see that a
client goes through the proxy.

Each chat request is answered by the first of: the ``enqueue`` queue (FIFO), the
``reply_with`` handler, the ``default`` given at construction, and finally an echo of the
last user message (``"echo: <text>"``, or ``{"echo": "<text>"}`` in JSON mode). Handlers
run on the server's event loop, so they must not block. The scripting methods are
thread-safe.

Structured outputs: ``response_format`` of type ``json_object`` or ``json_schema`` is JSON
mode. A ``json_schema`` with ``"strict": true`` must meet strict mode's rules (every object
sets ``additionalProperties: false`` and lists every property as required) or is refused with
400, as Groq and OpenAI do. ``FakeServer(json_schema=False)`` plays an endpoint or model
without structured outputs: every ``json_schema`` request is refused with 400 naming
``response_format``.

Tools: ``Reply(text, tool_calls=({"name": ..., "arguments": {...}},))`` answers with tool
calls (streamed as OpenAI does: the id and name, then the arguments in pieces) and ends with
``finish_reason: "tool_calls"``; a request that declares no such tool (``RecordedRequest.tools``
names those it does) is refused with 400, as no real model could call it. A request that asks
for ``logprobs`` gets made-up ones for its reply's pieces.

A reply longer than the request's ``max_completion_tokens`` (or ``max_tokens``) is cut at
that many words, reasoning first, and ends with ``finish_reason: "length"``, as a real
server's would. The ``"llamacpp"`` flavor first holds a JSON reply to its schema's
``maxLength`` limits (a longer string is closed at the limit), as llama.cpp's grammar does.

Token accounting is deterministic, so tests can assert on it:

* prompt tokens: for every message, ``ceil(len(content) / 4) + 4`` (see
  :func:`estimate_prompt_tokens`);
* completion tokens: the number of whitespace-separated words in the reply text plus
  those in its reasoning, unless ``Reply.usage`` overrides them; the reasoning's words are
  also given as ``completion_tokens_details.reasoning_tokens``.
* cached prompt tokens, as Groq reports them in ``prompt_tokens_details.cached_tokens``: the
  longest prefix of the request's messages that one of the last 64 requests for the same model
  began with (prompts only, not their replies), counted the same way; the characters a partly
  shared message begins with count a token per four (see :func:`cached_prefix_tokens`).
  ``FakeServer(prompt_cache=False)`` leaves them out, and so does a reply scripted with its own
  ``Reply.usage``. With ``slots`` or the ``"llamacpp"`` flavor, ``timings.cache_n`` says the same
  and ``timings.prompt_n`` counts only the tokens evaluated.

A reply's ``reasoning`` (the model's own thinking) is sent the way ``Reply.thinking_as`` says,
one of the three ways real servers send it: a ``reasoning`` field (Groq's parsed format,
OpenRouter, newer vLLM; the default), a ``reasoning_content`` field (DeepSeek, llama.cpp's
server, older vLLM), or ``think_tags``: inline in the content as ``<think>...</think>`` before
the reply (Groq's raw format, many local models), with each tag split across two chunks when
streamed, as a real tokenizer may split it.

Like llama.cpp's server, ``FakeServer(served_model="model.gguf")`` serves one model: it accepts
any model id, lists and reports only its own; ``slots=N`` makes it work on at most N requests at
once (the rest wait in its queue), answer ``GET /props`` with ``total_slots``, and add llama.cpp's
``timings`` (``prompt_ms``, ``predicted_ms``: time spent in a slot, queueing excluded) to replies.

``max_context`` plays a context window the way the real server named by ``flavor`` does:
``"groq"`` and ``"openai"`` publish it as ``context_window`` in the model list, ``"vllm"`` as
``max_model_len``, ``"llamacpp"`` in ``GET /props`` (``n_ctx``) and ``"ollama"`` in
``POST /api/show`` (``num_ctx``); each refuses an over-long request in that server's words,
and llama.cpp and Ollama stop a reply (``finish_reason="length"``) when the window fills up.
A reply scripted with ``finish_reason="length"`` is charged the whole budget. Model-discovery
requests are kept in ``discovery_requests``, apart from ``requests``.
``Reply(text, repeat=line)`` plays a looping model: ``line`` again and again after ``text``
until the budget runs out.

When ``rpm_limit`` / ``tpm_limit`` are set, a sliding window (60 s, or ``limit_window``) is
enforced. A request
is admitted when one more request and its prompt tokens fit; once answered it is charged
prompt + completion tokens. ``x-ratelimit-reset-*`` headers give the time until the oldest
charge leaves the window (when ``remaining`` next goes up).

The package's parts: ``replies`` (``Reply``, ``Fault``, ``RecordedRequest``, token counts),
``http`` (the HTTP/1.1 and SSE framing, TLS), ``server`` (``FakeServer``) and ``plugin`` (the
pytest fixtures). The server imports nothing else of llamaberry, so it stays a plain test
double (only the plugin's ``local_model`` fixture, when used, starts the local provider).
"""

from llamaberry.testing.replies import (
    Fault,
    RecordedRequest,
    Reply,
    cached_prefix_tokens,
    estimate_prompt_tokens,
)
from llamaberry.testing.server import DEFAULT_DECOMMISSIONED, DEFAULT_MODELS, FakeServer

__all__ = [
    "DEFAULT_DECOMMISSIONED",
    "DEFAULT_MODELS",
    "FakeServer",
    "Fault",
    "RecordedRequest",
    "Reply",
    "cached_prefix_tokens",
    "estimate_prompt_tokens",
]
