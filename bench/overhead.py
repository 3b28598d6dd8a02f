"""Overhead: what a 3-turn refine run costs beyond the server's own time for its four calls,
beside the same four requests made directly with `groq.AsyncGroq`."""

from __future__ import annotations

import statistics
import time
from typing import Any

from .replies import QUESTION
from .server import ServerProcess
from .stats import summary_ms
from .worker import Variant, cpu_seconds, run_worker
from .workloads import engine_refine, make_canned_engine

LATENCY = 0.02  # per call, so a run's server time is 4 x 20 ms
CALLS = 4


async def client(spec: dict[str, Any]) -> dict[str, Any]:
    """Sequential runs, engine and raw SDK alternating so any drift hits both alike."""
    variants = [Variant(name, spec["base_url"], 1) for name in ("engine", "raw")]
    walls: dict[str, list[float]] = {"engine": [], "raw": []}
    cpus: dict[str, list[float]] = {"engine": [], "raw": []}
    for variant in variants:  # warm-up: lazy imports, SDK set-up, the first connection
        for _ in range(3):
            await variant.run()
    for i in range(spec["runs"]):
        # Swap who goes first each round, so neither always runs on the warmer cache.
        for variant in variants if i % 2 == 0 else variants[::-1]:
            cpu = cpu_seconds()
            started = time.perf_counter()
            await variant.run()
            walls[variant.name].append(time.perf_counter() - started)
            cpus[variant.name].append(cpu_seconds() - cpu)
    for variant in variants:
        await variant.close()
    # The engine's own work alone: the same runs through a client that replays the replies.
    canned = make_canned_engine(spec["chunk_words"])
    for _ in range(20):
        await engine_refine(canned, QUESTION)
    cpu = cpu_seconds()
    for _ in range(spec["canned_runs"]):
        await engine_refine(canned, QUESTION)
    own = (cpu_seconds() - cpu) / spec["canned_runs"]
    return {"walls": walls, "cpus": cpus, "engine_own_cpu": own}


def measure(quick: bool, chunk_words: int) -> dict[str, Any]:
    """Run the overhead comparison and summarise it in milliseconds."""
    runs = 20 if quick else 60
    with ServerProcess(latency=LATENCY, chunk_words=chunk_words) as server:
        figures = run_worker(
            {
                "kind": "overhead",
                "base_url": server.base_url,
                "runs": runs,
                "chunk_words": chunk_words,
                "canned_runs": 200 if quick else 1000,
            }
        )
    walls, cpus = figures["walls"], figures["cpus"]
    server_time = CALLS * LATENCY
    result: dict[str, Any] = {"runs": runs, "latency_ms": LATENCY * 1000, "calls": CALLS}
    for name, values in walls.items():
        result[name] = summary_ms([w - server_time for w in values])
        result[name]["cpu_ms"] = statistics.median(cpus[name]) * 1000
    result["engine_own_cpu_ms"] = figures["engine_own_cpu"] * 1000
    # Paired by position: each engine run sat right next to a raw run in time.
    result["added"] = summary_ms(
        [e - r for e, r in zip(walls["engine"], walls["raw"], strict=True)]
    )
    return result
