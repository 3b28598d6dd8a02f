"""Throughput under a limit: the server answers 429 past N requests in any 60 s window; an
engine configured with rpm=N runs refine back to back from many tasks. How much of the limit
does it use, and how many 429s does it provoke?

A sliding 60 s window lets N requests through at once and N more only as the first ones age
out, so over T seconds the most any client can get admitted is N x ceil(T / 60) (a burst at
the start of each window). The run lasts just past one or two windows, so it includes the
moment the window rolls over, where a client that paces itself badly either stalls or
collides with the server's count. The roll-over lag is how long after the server would have
admitted the k-th request of the next window the engine actually sent it.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from typing import Any

from .replies import QUESTION
from .server import ServerProcess
from .workloads import engine_refine, make_engine

RPM = 300
LATENCY = 0.05
WORKERS = 20
WINDOW = 60.0
# --quick shortens the window the server counts in (and the engine paces by) to this: the same
# roll-over, a third of the wait.
QUICK_WINDOW = 20.0
SLACK = 10.0  # seconds past the last roll-over for the engine to send that window's burst


async def client(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs back to back from `workers` tasks for `seconds`, through an engine with `rpm`."""
    engine = make_engine(spec["base_url"], spec["workers"], rpm=spec["rpm"], window=spec["window"])
    started = time.monotonic()
    deadline = started + spec["seconds"]
    finished = failed = 0

    async def worker() -> None:
        nonlocal finished, failed
        while time.monotonic() < deadline:
            try:
                await engine_refine(engine, QUESTION)
                finished += 1
            except RuntimeError:
                failed += 1

    tasks = [asyncio.create_task(worker()) for _ in range(spec["workers"])]
    await asyncio.wait(tasks, timeout=spec["seconds"])
    for task in tasks:  # runs still waiting for the next window are not part of the figure
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await engine.aclose()
    return {"started": started, "runs_finished": finished, "runs_failed": failed}


def measure(quick: bool, chunk_words: int) -> dict[str, Any]:
    """Run the engine against the limit and report the admitted rate and the 429s."""
    from .worker import run_worker

    windows = 1 if quick else 2
    window = QUICK_WINDOW if quick else WINDOW
    seconds = windows * window + (SLACK / 2 if quick else SLACK)
    with ServerProcess(latency=LATENCY, rpm=RPM, window=window, chunk_words=chunk_words) as server:
        figures = run_worker(
            {
                "kind": "throughput",
                "base_url": server.base_url,
                "rpm": RPM,
                "window": window,
                "workers": WORKERS,
                "seconds": seconds,
            }
        )
        stats = server.stats()
    start = figures["started"]
    admitted = sorted(a for a in stats["admitted"] if start <= a < start + seconds)
    allowance = RPM * math.ceil(seconds / window)
    lags = [
        admitted[k + RPM] - (admitted[k] + window) for k in range(min(RPM, len(admitted) - RPM))
    ]
    return {
        "rpm": RPM,
        "window": window,
        "seconds": seconds,
        "workers": WORKERS,
        "latency_ms": LATENCY * 1000,
        "admitted": len(admitted),
        "allowance": allowance,
        "achieved": len(admitted) / allowance,
        "rate_limited": stats["rate_limited"],
        "runs_finished": figures["runs_finished"],
        "runs_failed": figures["runs_failed"],
        # How long the engine took to send the first window's worth of requests.
        "burst_seconds": admitted[RPM - 1] - admitted[0] if len(admitted) >= RPM else None,
        "rollover_lag_median_ms": statistics.median(lags) * 1000 if lags else None,
        "rollover_lag_max_ms": max(lags) * 1000 if lags else None,
    }
