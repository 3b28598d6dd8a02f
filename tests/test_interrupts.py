"""Stopping the command line: Ctrl-C, SIGTERM and SIGHUP all settle the run and keep it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from llamaberry.store import Store, default_path
from llamaberry.testing import FakeServer, Fault, RecordedRequest

from .conftest import FIRST_TURN

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def first_turn_then_hang(request: RecordedRequest):
    """Turn 1 answers; every later call hangs, so the run is in flight when it is stopped."""
    if "## Critique" in (request.user or ""):
        return Fault.hang()
    return FIRST_TURN


def start_ask(server: FakeServer, *extra: str, ctrl_c: bool = True) -> subprocess.Popen:
    """`llamaberry ask` in a process of its own; `ctrl_c=False` starts it with SIGINT ignored,
    as a shell does for a background job."""
    env = {**os.environ, "GROQ_API_KEY": "test-key", "GROQ_BASE_URL": server.groq_base_url}
    command = [sys.executable, "-m", "llamaberry", "ask", "q", "--turns", "2", *extra]
    disposition = signal.SIG_DFL if ctrl_c else signal.SIG_IGN
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, disposition),
    )


def wait_for_requests(server: FakeServer, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(server.requests) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(server.requests) >= count
    time.sleep(0.3)  # the first turn's reply is read and parsed


@pytest.mark.parametrize("ctrl_c", [True, False], ids=["foreground", "ctrl-c-ignored"])
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_a_run_like_ctrl_c_and_it_is_saved(
    fake_server: FakeServer, stop, ctrl_c
):
    fake_server.reply_with(first_turn_then_hang)
    process = start_ask(fake_server, ctrl_c=ctrl_c)
    wait_for_requests(fake_server, 2)
    process.send_signal(stop)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert err.decode().strip().endswith("cancelled.")
    with Store(default_path()) as store:
        (row,) = store.list_runs()
        run = store.get(row.id)
    assert run.status == "cancelled"
    assert len(run.result.turns) == 1 and run.result.turns[0].answer == "3"


def test_ask_json_interrupted_prints_the_partial_run(fake_server: FakeServer):
    fake_server.reply_with(first_turn_then_hang)
    process = start_ask(fake_server, "--json")
    wait_for_requests(fake_server, 2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    run = json.loads(out)
    assert run["status"] == "cancelled"
    turns = run["result"]["turns"]
    assert len(turns) == 1 and turns[0]["answer"] == "3"
    assert run["error"] == "cancelled before it finished"
