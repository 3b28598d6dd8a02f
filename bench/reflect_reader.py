"""What reading a reflect chain as it streams costs in CPU: the reply fed to the reader in
small pieces (as a fast provider streams it, a few characters each), timed, for chains of
growing length.

    uv run python bench/reflect_reader.py

The reader reads again only the end of the reply from the last finished part on, so the cost
should grow with the reply's length, not with its square. Each line also checks that the
steps read piece by piece are those read from the whole reply at once.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llamaberry.modes.reflect import ReflectResult, _Reader, read_chain  # noqa: E402


def chain(steps: int) -> str:
    """A well-formed chain of `steps` steps, reflecting every third, then an answer."""
    parts = []
    for n in range(1, steps + 1):
        parts.append(f"<step>Thinking about the problem in some detail, round {n}.</step>\n")
        parts.append(f"<count>{steps - n}</count>\n")
        if n % 3 == 0:
            parts.append(
                f"<reflection>Going fine at {n}.</reflection>\n<reward>0.{n % 10}</reward>\n"
            )
    parts.append("<answer>42</answer>\n<reflection>Done.</reflection><reward>0.9</reward>")
    return "".join(parts)


def main() -> None:
    """Print one line per chain length: characters, pieces, seconds, and whether it matches."""
    for steps in (12, 50, 200, 800):
        text = chain(steps)
        pieces = [
            p for word in re.findall(r"\S+\s*|\s+", text) for p in re.findall(r".{1,4}", word, re.S)
        ]
        result = ReflectResult()
        reader = _Reader(result, steps)
        started = time.perf_counter()
        for piece in pieces:
            reader.feed(piece)
        reader.finish()
        seconds = time.perf_counter() - started
        whole = read_chain(text)
        same = [s.content for s in result.steps] == [p.content for p in whole.steps]
        print(
            f"{steps:4} steps  {len(text):7,} chars  {len(pieces):6,} pieces  "
            f"{seconds * 1000:7.1f} ms  {seconds / len(pieces) * 1e6:5.1f} µs/piece  same: {same}"
        )


if __name__ == "__main__":
    main()
