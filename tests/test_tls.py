"""HTTPS: the CLI and both SDK providers against the fake server over TLS (trustme certificates).

Real hosted endpoints are https, so these pin what a run over TLS does: answers stream, calls
share a kept-alive TLS connection, a dropped stream is retried, and a certificate the client
cannot verify is one readable line, not retried. The CLI runs in a subprocess, as a user runs
it, trusting the fake's throwaway CA through SSL_CERT_FILE (httpx reads it once per process).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator

import groq
import openai
import pytest

from llamaberry.testing import FakeServer, Fault

from .conftest import FIRST_TURN, refine_script

# Distinctive, so a leak into any output is easy to see.
KEY = "gsk_tls-test-key-must-never-be-shown-0123456789"


@pytest.fixture
def https_server() -> Iterator[FakeServer]:
    """A thread-mode fake server on HTTPS, answering refine's calls well-formed."""
    with FakeServer(tls=True) as server:
        server.reply_with(refine_script)
        yield server


def run_cli(
    server: FakeServer, provider: str, *args: str, trust: bool | str = True
) -> subprocess.CompletedProcess[str]:
    """`llamaberry ask ARGS` in a fresh process, pointed at `server` through `provider`.

    SSL_CERT_FILE is the server's CA when `trust` is True, unset when False, else `trust` itself;
    the developer's own CA settings are never inherited.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("GROQ_", "OPENAI_", "SSL_CERT_"))
    }
    ca_file = server.ca_file if trust is True else trust or None
    if ca_file:
        env["SSL_CERT_FILE"] = ca_file
    if provider == "groq":
        env.update(GROQ_API_KEY=KEY, GROQ_BASE_URL=server.groq_base_url)
        where: list[str] = []
    else:
        env["OPENAI_API_KEY"] = KEY
        where = ["--provider", "openai", "--base-url", server.openai_base_url]
    return subprocess.run(
        [sys.executable, "-m", "llamaberry", "ask", *args, *where],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def failed_handshakes(server: FakeServer, at_least: int) -> int:
    """`server.handshakes_failed` once it reaches `at_least` (or after 10 s): the server counts
    a refused handshake when the client's alert arrives, which may be just after it exits."""
    deadline = time.monotonic() + 10
    while server.handshakes_failed < at_least and time.monotonic() < deadline:
        time.sleep(0.01)
    return server.handshakes_failed


def assert_one_clean_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failure is one line on stderr, without a traceback or the key; return that line."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert KEY not in result.stderr and KEY not in result.stdout
    return result.stderr.strip()


@pytest.mark.parametrize("provider", ["groq", "openai"])
def test_ask_streams_its_answer_over_https(https_server: FakeServer, provider: str):
    result = run_cli(https_server, provider, "How many r in strawberry?", "--turns", "1")
    assert result.returncode == 0, result.stderr
    assert "Turn 1" in result.stdout and "Synthesis" in result.stdout
    assert "There are 3 r's" in result.stdout
    assert KEY not in result.stdout + result.stderr
    sent = https_server.requests
    assert len(sent) == 2  # one turn and the synthesis
    assert {request.provider for request in sent} == {provider}
    # Every request, model discovery included, came over TLS.
    assert all(r.tls and r.tls.startswith("TLS") for r in sent + https_server.discovery_requests)
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in sent)
    assert https_server.handshakes_failed == 0


@pytest.mark.parametrize("provider", ["groq", "openai"])
def test_a_refine_run_keeps_one_tls_connection_alive_for_all_its_calls(
    https_server: FakeServer, provider: str
):
    result = run_cli(https_server, provider, "q", "--turns", "3", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "ok"
    assert len(https_server.requests) == 4  # three turns and the synthesis, one after another
    # Model discovery and the four calls: one TCP connection, one handshake.
    assert https_server.connections_opened == 1


@pytest.mark.parametrize("provider", ["groq", "openai"])
def test_a_tls_stream_dropped_mid_reply_is_retried_on_a_new_connection(
    https_server: FakeServer, provider: str
):
    https_server.enqueue(Fault.drop_after(3, text="one two three four five six"), FIRST_TURN)
    result = run_cli(https_server, provider, "q", "--mode", "single", "--json")
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["status"] == "ok"
    assert run["answer"] == FIRST_TURN
    assert len(https_server.requests) == 2
    # The server cut the first connection, so the retry had to make (and verify) another.
    assert https_server.connections_opened == 2
    assert https_server.handshakes_failed == 0


@pytest.mark.parametrize("provider", ["groq", "openai"])
def test_an_untrusted_certificate_fails_at_once_with_one_line_naming_ssl_cert_file(
    https_server: FakeServer, provider: str
):
    result = run_cli(https_server, provider, "q", "--mode", "single", trust=False)
    line = assert_one_clean_line(result)
    assert line.startswith("error: Answer failed: Could not verify the TLS certificate of the ")
    assert "https://127.0.0.1:" in line
    assert "SSL_CERT_FILE" in line
    # No request got through, and the call was not retried: one refused handshake for model
    # discovery and one for the call (a retry would have made more).
    assert https_server.requests == []
    assert failed_handshakes(https_server, at_least=2) == 2


def test_a_certificate_for_another_host_name_fails_naming_the_mismatch():
    # Issued for "localhost" only, while the base URL connects to 127.0.0.1; the CA is trusted,
    # so what fails is the name.
    with FakeServer(tls=["localhost"]) as server:
        result = run_cli(server, "groq", "q", "--mode", "single")
        assert server.requests == []
        assert failed_handshakes(server, at_least=2) == 2
    line = assert_one_clean_line(result)
    assert "Could not verify the TLS certificate" in line
    assert "not valid for '127.0.0.1'" in line
    assert "check the host in the base URL" in line
    assert "SSL_CERT_FILE" not in line  # trusting another CA would not help


def test_a_ca_file_that_cannot_be_read_is_one_line(https_server: FakeServer, tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    result = run_cli(https_server, "groq", "q", "--mode", "single", trust=str(bad))
    line = assert_one_clean_line(result)
    assert f"Could not load CA certificates from SSL_CERT_FILE ({bad})" in line
    assert https_server.requests == []


@pytest.mark.parametrize("provider", ["groq", "openai"])
async def test_the_in_loop_server_serves_https_to_each_sdk(provider: str):
    async with FakeServer(tls=True) as server:
        assert server.groq_base_url.startswith("https://127.0.0.1:")
        assert server.openai_base_url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=server.ca_file)
        if provider == "groq":
            client: groq.AsyncGroq | openai.AsyncOpenAI = groq.AsyncGroq(
                api_key="k",
                base_url=server.groq_base_url,
                http_client=groq.DefaultAsyncHttpxClient(verify=trusted),
            )
        else:
            client = openai.AsyncOpenAI(
                api_key="k",
                base_url=server.openai_base_url,
                http_client=openai.DefaultAsyncHttpxClient(verify=trusted),
            )
        async with client:
            stream = await client.chat.completions.create(
                model="openai/gpt-oss-120b",
                messages=[{"role": "user", "content": "over tls"}],
                stream=True,
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "echo: over tls"
    assert server.requests[0].tls in ("TLSv1.2", "TLSv1.3")


def test_tls_takes_names_not_a_single_string():
    with pytest.raises(TypeError):
        FakeServer(tls="localhost")  # type: ignore[arg-type]


def test_without_trustme_tls_says_what_to_install_and_plain_http_still_works(monkeypatch):
    monkeypatch.setitem(sys.modules, "trustme", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"FakeServer\(tls=\.\.\.\) needs the trustme package"):
        FakeServer(tls=True)
    with FakeServer() as server:
        assert server.groq_base_url.startswith("http://") and server.ca_file is None
