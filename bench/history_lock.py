"""How long the event loop stalls when the history database is locked by another process.

Another connection holds the write lock for HOLD seconds while three single runs go through an
engine that saves to that database. A heartbeat task on the loop records the longest gap
between its wake-ups (it asks for one every 5 ms). Run it with any version of llamaberry:

    uv run python bench/history_lock.py [HOLD]
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

from llamaberry import Engine
from llamaberry.store import Store
from llamaberry.testing import FakeServer


async def measure(base_url: str, path: Path, hold: float) -> tuple[float, float, float]:
    """(longest loop stall, seconds until the three runs returned, seconds until closed)."""
    # Built and warmed first: the SDK import and the first connection are not what we measure.
    engine = Engine(api_key="bench-key", base_url=base_url, history=Store(path))
    await engine.models()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(hold, lambda: other.execute("COMMIT")).start()
    stalls = [0.0]
    stop = False

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            stalls[0] = max(stalls[0], now - last - 0.005)
            last = now

    beat = asyncio.create_task(heartbeat())
    started = time.perf_counter()
    for i in range(3):
        await engine.single(f"question {i}")
    returned = time.perf_counter() - started
    await engine.aclose()
    closed = time.perf_counter() - started
    stop = True
    await beat
    return stalls[0], returned, closed


def main() -> None:
    """Print the figures for one held-lock interval."""
    hold = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    with FakeServer(default="Paris.") as server, tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "history.db"
        Store(path).count()  # create the file and its schema first
        stall, returned, closed = asyncio.run(measure(server.groq_base_url, path, hold))
        saved = Store(path).count()
    print(
        f"lock held {hold:.1f}s: longest loop stall {stall:.3f}s; three runs returned after "
        f"{returned:.2f}s; engine closed after {closed:.2f}s; runs saved: {saved}/3"
    )


if __name__ == "__main__":
    main()
