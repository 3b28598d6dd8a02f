"""Streaming: from the server handing a call's first visible text to the socket, to the engine
emitting the `TextDelta` that carries it; beside the raw SDK yielding the same chunk.

The server (its own process) notes `time.monotonic()` right after it writes the first content
chunk; the client notes it when the event reaches the consumer. On Linux both read
CLOCK_MONOTONIC, so the difference is a real interval. Chunks are paced (5 ms apart) so the
first content chunk travels in a write of its own.
"""

from __future__ import annotations

from typing import Any

from .server import ServerProcess
from .stats import summary_ms
from .worker import VARIANTS, Variant, run_worker

LATENCY = 0.02
CHUNK_DELAY = 0.005


async def client(spec: dict[str, Any]) -> dict[str, Any]:
    """Sequential runs noting when each call's first visible text reaches the consumer."""
    variant = Variant(spec["variant"], spec["base_url"], 1)
    await variant.run()  # warm-up; the parent drops its four calls
    seen: list[float] = []
    for _ in range(spec["runs"]):
        await variant.run(seen.append)
    await variant.close()
    return {"seen": seen}


def measure(quick: bool, chunk_words: int) -> dict[str, Any]:
    """Per-call first-text latency for the engine and the raw SDK."""
    runs = 5 if quick else 15
    result: dict[str, Any] = {
        "runs": runs,
        "latency_ms": LATENCY * 1000,
        "chunk_delay_ms": CHUNK_DELAY * 1000,
    }
    with ServerProcess(latency=LATENCY, chunk_delay=CHUNK_DELAY, chunk_words=chunk_words) as server:
        for name in VARIANTS:
            server.reset()
            figures = run_worker(
                {
                    "kind": "streaming",
                    "base_url": server.base_url,
                    "variant": name,
                    "runs": runs,
                }
            )
            sent = server.stats()["first_content"][4:]  # past the warm-up run's four calls
            seen = figures["seen"]
            if len(sent) != len(seen):
                raise RuntimeError(f"{name}: {len(sent)} first chunks sent, {len(seen)} seen")
            result[name] = summary_ms([s - t for s, t in zip(seen, sent, strict=True)])
            result[name]["samples"] = len(seen)
    return result
