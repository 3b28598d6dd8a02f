"""Concurrency: 1, 10, 100 and 1000 refine runs at once against 200 ms of server latency per
call, through the engine and through raw `groq.AsyncGroq`, each in a fresh process.

Two raw baselines: `raw` is one `AsyncGroq` with a pool of N connections, as a user would
write it; `raw_pooled` spreads the same N connections over pools of `RAW_POOL_SIZE`, the raw
SDK at its best at scale (httpcore's pool costs O(N^2) per request), the one the engine is held
to. The engine keeps its N connections in one pool: the SDK's own client over its aiohttp backend
(llamaberry/providers/transport.py).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from .server import ServerProcess
from .worker import ALL_VARIANTS, Variant, cpu_seconds, memory_kb, reset_peak, run_worker

LATENCY = 0.2
LEVELS = (1, 10, 100, 1000)


async def client(spec: dict[str, Any]) -> dict[str, Any]:
    """`concurrency` runs at once, `reps` times: wall, CPU per run and memory per run."""
    n = spec["concurrency"]
    variant = Variant(spec["variant"], spec["base_url"], n)
    await variant.run()  # warm-up: lazy imports and SDK set-up are not what is measured
    reset_peak()  # ...nor the peak they reached
    before = memory_kb()
    walls, cpus = [], []
    for _ in range(spec["reps"]):
        cpu = cpu_seconds()
        started = time.perf_counter()
        await asyncio.gather(*(variant.run() for _ in range(n)))
        walls.append(time.perf_counter() - started)
        cpus.append((cpu_seconds() - cpu) / n)
    after = memory_kb()
    await variant.close()
    return {
        "walls": walls,
        "cpus": cpus,
        "rss_before_kb": before["rss"],
        "peak_rss_kb": after["hwm"],
        # Python rarely hands memory back, so the high-water mark is the in-flight peak.
        "kb_per_run": (after["hwm"] - before["rss"]) / n,
    }


def measure(quick: bool, chunk_words: int, levels: tuple[int, ...] = LEVELS) -> dict[str, Any]:
    """Every level, engine and raw SDK in alternating order, one fresh process each; then
    100 runs over TLS, engine against the raw SDK at its best."""
    rows = []
    with ServerProcess(latency=LATENCY, chunk_words=chunk_words) as server:
        for level in levels:
            reps = (
                1
                if level >= 1000 or (quick and level >= 100)
                else 2
                if quick or level >= 100
                else 3
            )
            row: dict[str, Any] = {"concurrency": level, "reps": reps}
            order = ALL_VARIANTS if level % 2 == 0 else ALL_VARIANTS[::-1]
            for name in order:
                server_cpu = server.stats()["cpu"]
                figures = run_worker(
                    {
                        "kind": "concurrency",
                        "base_url": server.base_url,
                        "variant": name,
                        "concurrency": level,
                        "reps": reps,
                    }
                )
                figures["server_cpu"] = server.stats()["cpu"] - server_cpu
                figures["wall"] = statistics.median(figures["walls"])
                figures["cpu_per_run"] = statistics.median(figures["cpus"])
                row[name] = figures
            rows.append(row)
    return {
        "latency_ms": LATENCY * 1000,
        "rows": rows,
        "tls": _over_tls(chunk_words, TLS_LEVEL, 1 if quick else 2),
    }


# Real endpoints are HTTPS: the same batch over TLS (a throwaway CA the clients trust).
TLS_LEVEL = 100


def _over_tls(chunk_words: int, level: int, reps: int) -> dict[str, Any]:
    row: dict[str, Any] = {"concurrency": level, "reps": reps}
    with ServerProcess(latency=LATENCY, chunk_words=chunk_words, tls=True) as server:
        assert server.ca_file is not None
        for name in ("engine", "raw_pooled"):
            server_cpu = server.stats()["cpu"]
            spec = {
                "kind": "concurrency",
                "base_url": server.base_url,
                "variant": name,
                "concurrency": level,
                "reps": reps,
            }
            figures = run_worker(spec, env={"SSL_CERT_FILE": server.ca_file})
            figures["server_cpu"] = server.stats()["cpu"] - server_cpu
            figures["wall"] = statistics.median(figures["walls"])
            figures["cpu_per_run"] = statistics.median(figures["cpus"])
            row[name] = figures
    return row
