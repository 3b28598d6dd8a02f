"""A bounded load test: many concurrent runs against a server that fails one call in ten."""

from __future__ import annotations

import asyncio
import random
import time

from llamaberry import Engine, Run, Store
from llamaberry.providers.groq import GroqClient
from llamaberry.providers.retries import RetryPolicy
from llamaberry.testing import FakeServer, Fault, Reply

from .conftest import refine_script

RUNS = 500
FAULT_RATE = 0.10
# Every run must end by this: hung calls at their --timeout, the rest well before.
BOUND = 240


def faulty_script(seed: int):
    """Answer like a well-behaved model, except that one call in ten meets a fault."""
    rng = random.Random(seed)
    faults = [
        lambda: Fault.status(503),
        lambda: Fault.status(429, headers={"retry-after": "0"}),
        lambda: Fault.status(400, {"error": {"message": "rejected"}}),
        lambda: Fault.drop(),
        lambda: Fault.drop_after(2, "partial text cut"),
        lambda: Fault.truncate(),
        lambda: Fault.hang(),
    ]

    def script(request):
        if rng.random() < FAULT_RATE:
            return rng.choice(faults)()
        # A few pieces a reply, not one a word: this is about 500 runs and their faults, and
        # 60 one-word pieces a call are most of the CPU a loaded 2-core machine is short of.
        return Reply(refine_script(request), chunk_words=20)

    return script


async def test_500_concurrent_runs_with_random_faults_all_end_and_none_is_lost(tmp_path):
    finished: list[Run] = []
    store = Store(tmp_path / "history.db")
    async with FakeServer() as server:
        server.reply_with(faulty_script(seed=7))
        client = GroqClient(
            api_key="k",
            base_url=server.groq_base_url,
            model="openai/gpt-oss-120b",
            # --timeout bounds a whole call, retries included, and is what ends a hung one.
            # 500 runs at once on a busy 2-core machine make a healthy run take 10-20 s end
            # to end, and past 30 s under a heavier one (then 60% of the runs failed), so 60 s.
            timeout=60.0,
            retry=RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.05),
            max_connections=RUNS,
        )
        async with Engine(client=client, on_finish=finished.append, history=store) as engine:

            async def one(i: int) -> Run | BaseException:
                try:
                    return await engine.refine(f"question {i}", turns=1)
                except Exception as error:  # RunFailedError carries the failed run
                    return error

            started = time.perf_counter()
            outcomes = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(RUNS))), BOUND)
            elapsed = time.perf_counter() - started

    assert len(outcomes) == RUNS
    statuses = [run.status for run in finished]
    assert len(finished) == RUNS  # every run reached its end and was handed on
    assert len({run.question for run in finished}) == RUNS
    assert set(statuses) <= {"ok", "failed"}
    assert statuses.count("ok") > RUNS * 0.8  # retries rescue most faults
    for run in finished:
        if run.status == "failed":
            assert run.error and "\n" not in run.error
            assert "Traceback" not in run.error
        else:
            assert run.answer and len(run.result.turns) == 1
    assert elapsed < BOUND
    # Every run, failed ones included, is in the history with the status it ended with.
    saved = Store(tmp_path / "history.db")
    assert saved.count() == RUNS
    assert sorted(r.status for r in saved.runs()) == sorted(statuses)
    saved.close()
