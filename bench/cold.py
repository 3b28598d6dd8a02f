"""Cold start: a fresh `llamaberry ask` process, from the server sending the first visible text
to that text reaching the terminal (stdout); beside a fresh process doing the same call with the
raw groq SDK. Also: how long building an `Engine` takes.

The server (its own process) notes CLOCK_MONOTONIC right after it writes a reply's first text
chunk; this process reads the child's stdout as it arrives and notes the same clock when the
reply's first words show up there. Chunks are paced (5 ms apart) so the first text leaves in a
write of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .replies import QUESTION
from .server import ServerProcess
from .stats import summary_ms

LATENCY = 0.02
CHUNK_DELAY = 0.005
SCRIPT = Path(sys.executable).parent / "llamaberry"
# The first words of the scripted turn-1 reply, which is what a single run gets back.
MARKER = b"## Reasoning"
TIMEOUT = 60.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GROQ_", "LLAMABERRY_"))}
    env["LLAMABERRY_HISTORY"] = "0"
    env["GROQ_API_KEY"] = "bench"
    return env


def _first_seen(command: list[str]) -> tuple[float, float]:
    """Run `command`; return (launch, moment MARKER first appeared on its stdout)."""
    launched = time.monotonic()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env()
    )
    assert process.stdout is not None
    seen = None
    output = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() - launched < TIMEOUT:
            if not selector.select(timeout=1.0):
                continue
            data = os.read(process.stdout.fileno(), 65536)
            if not data:
                break
            output += data
            if seen is None and MARKER in output:
                seen = time.monotonic()
    process.wait(timeout=TIMEOUT)
    if seen is None:
        raise RuntimeError(f"{command[0]} never printed the reply: {output[-300:]!r}")
    return launched, seen


def raw_child(base_url: str) -> None:
    """The raw-SDK side: one streamed call in a fresh process, printing the text as it comes."""
    import groq

    from llamaberry.core.settings import DEFAULT_MODEL

    async def go() -> None:
        client = groq.AsyncGroq(api_key="bench", base_url=base_url, max_retries=0)
        stream = await client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": QUESTION}],
            max_completion_tokens=4096,
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                sys.stdout.write(chunk.choices[0].delta.content)
                sys.stdout.flush()
        await client.close()

    asyncio.run(go())


def construction(count: int) -> dict[str, float]:
    """Milliseconds to build an Engine: the first in a process (imports done) and later ones."""
    code = f"""
import asyncio, json, time
from llamaberry import Engine
from llamaberry.core.settings import Settings
async def main():
    settings = Settings.load(api_key="bench", base_url="http://127.0.0.1:9", provider="groq")
    times, engines = [], []
    for _ in range({count}):
        started = time.perf_counter()
        engine = Engine(settings=settings, history=False)
        times.append(time.perf_counter() - started)
        engines.append(engine)
        # Let its background warm-up finish, so the next one is timed on a quiet process.
        await engine.client.ready()
    for engine in engines:
        await engine.aclose()
    print(json.dumps(times))
asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"engine construction bench failed: {done.stderr[-500:]}")
    times = json.loads(done.stdout)
    return {
        "first_ms": times[0] * 1000,
        "median_ms": statistics.median(times[1:]) * 1000,
        "max_ms": max(times[1:]) * 1000,
        "count": len(times),
    }


def measure(quick: bool) -> dict[str, Any]:
    """Cold first-visible-token latency for `llamaberry ask` and the raw SDK, alternating."""
    runs = 4 if quick else 10
    result: dict[str, Any] = {
        "runs": runs,
        "latency_ms": LATENCY * 1000,
        "chunk_delay_ms": CHUNK_DELAY * 1000,
    }
    with ServerProcess(latency=LATENCY, chunk_delay=CHUNK_DELAY, chunk_words=8) as server:
        commands = {
            "engine": [
                str(SCRIPT),
                "ask",
                "--mode",
                "single",
                "--provider",
                "groq",
                "--base-url",
                server.base_url,
                QUESTION,
            ],
            "raw": [sys.executable, "-m", "bench.cold", server.base_url],
        }
        _first_seen(commands["engine"])  # warm the disk cache and the .pyc files
        _first_seen(commands["raw"])
        gaps: dict[str, list[float]] = {"engine": [], "raw": []}
        totals: dict[str, list[float]] = {"engine": [], "raw": []}
        for i in range(runs):
            for name in ("engine", "raw") if i % 2 == 0 else ("raw", "engine"):
                server.reset()
                launched, seen = _first_seen(commands[name])
                sent = server.stats()["first_content"]
                if not sent:
                    raise RuntimeError(f"{name}: the server sent no text")
                gaps[name].append(seen - sent[0])
                totals[name].append(seen - launched)
    for name in ("engine", "raw"):
        result[name] = summary_ms(gaps[name])
        result[name]["max_ms"] = max(gaps[name]) * 1000
        result[name]["launch_to_text_ms"] = statistics.median(totals[name]) * 1000
    result["construction"] = construction(20 if quick else 100)
    return result


if __name__ == "__main__":
    raw_child(sys.argv[1])
