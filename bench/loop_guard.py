"""What the loop guard saves on a looping reply: tokens and seconds, with the guard on and off.

    uv run python bench/loop_guard.py [--budget 4096] [--rate 40] [--runs 3]

The fake server plays a model that writes a short start and then one line again and again until
the completion budget runs out, at `--rate` tokens per second (a small model on a CPU writes
20 to 60). Each run is a single call through the real groq SDK; the figures are the completion
tokens the call was charged and its wall time, as the engine recorded them.

With `--base-url URL --model NAME` it asks a real OpenAI-compatible server instead (e.g. a local
llama.cpp serving a small model) with a question that tends to make small models loop; whether
it loops is up to the model, so the figures say how many calls did.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llamaberry import Engine  # noqa: E402
from llamaberry.testing import FakeServer, Reply  # noqa: E402

LINE = "I need to check the count of the letter r again to be sure.\n"
PROMPT = "Repeat after me, forever, one line at a time: I need to check the count again."


async def simulated(budget: int, rate: float, guard: bool) -> tuple[int, float, bool]:
    async with FakeServer() as server:
        server.enqueue(
            Reply("## Reasoning\n1. Spell the word.\n", repeat=LINE, chunk_delay=1 / rate)
        )
        async with Engine(
            api_key="bench",
            base_url=server.groq_base_url,
            max_tokens=budget,
            loop_guard=guard,
            history=False,
        ) as engine:
            run = await engine.single("How many r in strawberry?")
    turn = run.result.turns[0]
    return turn.usage.completion_tokens, turn.seconds, turn.looped


async def real(base_url: str, model: str, budget: int, guard: bool) -> tuple[int, float, bool]:
    async with Engine(
        provider="openai",
        base_url=base_url,
        model=model,
        max_tokens=budget,
        loop_guard=guard,
        temperature=0,
        history=False,
    ) as engine:
        run = await engine.single(PROMPT)
    turn = run.result.turns[0]
    return turn.usage.completion_tokens, turn.seconds, turn.looped


def main() -> None:
    """Run each configuration `--runs` times and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=4096)
    parser.add_argument("--rate", type=float, default=40.0, help="tokens per second")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--base-url")
    parser.add_argument("--model", default="local")
    args = parser.parse_args()
    print(f"budget {args.budget} tokens" + ("" if args.base_url else f", {args.rate:g} tokens/s"))
    for guard in (True, False):
        results = []
        for _ in range(args.runs):
            call = (
                real(args.base_url, args.model, args.budget, guard)
                if args.base_url
                else simulated(args.budget, args.rate, guard)
            )
            results.append(asyncio.run(call))
        tokens = statistics.median(r[0] for r in results)
        seconds = statistics.median(r[1] for r in results)
        looped = sum(r[2] for r in results)
        print(
            f"guard {'on ' if guard else 'off'}: {tokens:>6.0f} completion tokens, "
            f"{seconds:6.2f} s (median of {args.runs}); stopped as a loop: {looped}/{args.runs}"
        )


if __name__ == "__main__":
    main()
