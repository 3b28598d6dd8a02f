"""Client processes: each measurement's client side runs in a fresh Python process, so its CPU
time and peak memory belong to one variant alone and never to the server or the parent.

`python -m bench.worker '<json spec>'` runs `bench.<spec.kind>.client(spec)` and prints its
figures as one JSON line; `run_worker(spec)` does that from the parent.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import resource
import subprocess
import sys
from typing import Any

import groq

from .replies import QUESTION
from .workloads import PooledRaw, engine_refine, make_engine, make_raw_client, raw_refine

VARIANTS = ("engine", "raw")
# raw_pooled: the raw SDK with its connections spread over small pools as the engine does.
ALL_VARIANTS = (*VARIANTS, "raw_pooled")


def memory_kb() -> dict[str, int]:
    """This process's resident set now (VmRSS) and at its peak so far (VmHWM), in KiB."""
    figures = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                figures[name] = int(value.split()[0])
    return {"rss": figures["VmRSS"], "hwm": figures["VmHWM"]}


def reset_peak() -> None:
    """Start this process's high-water mark (VmHWM) afresh from its present size, so a peak
    before a measurement (a warm-up's imports, compiling a module) is not counted in it."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def cpu_seconds() -> float:
    """User plus system CPU time of this process (sockets cost system time on loopback)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Variant:
    """One side of a comparison: `run()` makes one refine run's four requests."""

    def __init__(self, name: str, base_url: str, concurrency: int, rpm: int | None = None):
        self.name = name
        self.engine = make_engine(base_url, concurrency, rpm=rpm) if name == "engine" else None
        self.client: groq.AsyncGroq | PooledRaw | None = None
        if name == "raw":
            self.client = make_raw_client(base_url, concurrency)
        elif name == "raw_pooled":
            self.client = PooledRaw(base_url, concurrency)

    async def run(self, on_first_text=None) -> None:
        """One 3-turn refine run (or its four requests by hand)."""
        if self.engine is not None:
            await engine_refine(self.engine, QUESTION, on_first_text)
        else:
            await raw_refine(self.client, QUESTION, on_first_text)

    async def close(self) -> None:
        """Close the connection pool."""
        if self.engine is not None:
            await self.engine.aclose()
        else:
            await self.client.close()


def run_worker(
    spec: dict[str, Any], timeout: float = 600, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one client process and return its figures; `env` adds to its environment."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env} if env else None,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench worker {spec['kind']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the client side of the measurement the spec names."""
    spec = json.loads(sys.argv[1])
    module = importlib.import_module(f"bench.{spec['kind']}")
    print(json.dumps(asyncio.run(module.client(spec))))


if __name__ == "__main__":
    main()
