"""Ctrl-C during an eval keeps what was paid for: runs in flight are saved as cancelled with
the calls they finished, and the rerun reuses those calls instead of asking for them again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from llamaberry.store import Store
from llamaberry.testing import FakeServer, Fault, RecordedRequest

from .conftest import refine_script, replies_in, sums
from .test_eval import ctrl_c_as_in_a_terminal, stopped_by_ctrl_c


def turn(request: RecordedRequest) -> str:
    """Which call of refine this is: 'turn N' or 'synthesis'."""
    if "## Concise Answer" in (request.user or ""):
        return "synthesis"
    return f"turn {len(replies_in(request)) + 1}"


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to a process group")
def test_ctrl_c_saves_runs_in_flight_and_the_rerun_pays_only_for_what_had_not_finished(
    fake_server: FakeServer, tmp_path
):
    stuck = {"on": True}

    def answer(request: RecordedRequest):
        if stuck["on"] and turn(request) == "turn 3":
            return Fault.hang()  # both items' third turns are in flight at Ctrl-C
        return refine_script(request)

    fake_server.reply_with(answer)
    dataset = sums(tmp_path / "sums.jsonl", 2)
    env = {
        **os.environ,
        "GROQ_API_KEY": "test-key-ctrl-c",
        "GROQ_BASE_URL": fake_server.groq_base_url,
        "PYTHONFAULTHANDLER": "1",
    }
    command = [sys.executable, "-m", "llamaberry", "eval", str(dataset), "--modes", "refine"]
    command += ["--out", str(tmp_path / "out")]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=ctrl_c_as_in_a_terminal,
    )
    deadline = time.monotonic() + 60
    while sum(turn(r) == "turn 3" for r in fake_server.requests) < 2:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            _, err = process.communicate()
            raise AssertionError(f"the third turns were never asked for:\n{err.decode()}")
        time.sleep(0.05)
    paid = len(fake_server.requests) - 2  # two turns of each item were answered
    assert paid == 4
    os.killpg(process.pid, signal.SIGINT)
    err = stopped_by_ctrl_c(process)
    assert process.returncode == 130 and "Traceback" not in err

    with Store() as store:
        runs = list(store.runs())
    assert sorted(run.status for run in runs) == ["cancelled", "cancelled"]
    for run in runs:
        finished = [c for c in run.calls if c.error is None]
        assert [c.index for c in finished] == [1, 2]
        assert run.usage.total_tokens == sum(c.usage.total_tokens for c in finished) > 0

    stuck["on"] = False
    asked = len(fake_server.requests)
    rerun = subprocess.run(command, env=env, capture_output=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr.decode()
    again = sorted(turn(r) for r in fake_server.requests[asked:])
    assert again == ["synthesis", "synthesis", "turn 3", "turn 3"]
    with Store() as store:
        done = [run for run in store.runs() if run.status == "ok"]
    assert len(done) == 2
    for run in done:  # each a whole run: the two turns it did not ask for again, and the rest
        assert [t.index for t in run.result.turns] == [1, 2, 3]
        assert run.result.synthesis is not None
