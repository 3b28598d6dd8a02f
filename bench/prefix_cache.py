"""Prefix caching: a 3-turn refine run laid out as today (one growing conversation) against the
layout before it (each call its own system prompt, earlier turns pasted into one user message),
whose prompt functions are read from git at `--before`.

1. The fake server playing Groq's cache: the share of the run's input tokens it reports cached,
   with the bench's scripted replies (about 140 tokens a turn) and longer ones (`--turn-tokens`),
   every layout sending the same replies back; and what the run costs on Groq's gpt-oss-120b,
   priced by `core/prices.py` (genai-prices, cached input at its own price), the completions
   being the scripted replies and synthesis. `--also REV` adds the layout at another revision.
2. The embedded model (SmolLM2-135M, llama.cpp in this process): a fresh server for each run,
   the layouts alternated; per run, the prompt tokens sent, those llama.cpp evaluated
   (`timings.prompt_n`) and read from its cache (`timings.cache_n`), and the synthesis call's
   time to its first token.

`uv run python -m bench.prefix_cache [--runs N] [--max-tokens N] [--before REV] [--also REV]
[--turn-tokens N ...] [--groq-only]`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
import types
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from llamaberry.core.prices import price_calls
from llamaberry.core.results import Usage
from llamaberry.modes import prompts
from llamaberry.providers import local
from llamaberry.testing import FakeServer, estimate_prompt_tokens

from .replies import QUESTION, first_turn, later_turn, synthesis

TURNS = 3
Layout = types.ModuleType


def old_layout(rev: str) -> Layout:
    """The prompts module as it was at `rev`."""
    source = subprocess.run(
        ["git", "show", f"{rev}:llamaberry/modes/prompts.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("prompts_before")
    exec(compile(source, "prompts_before", "exec"), module.__dict__)  # our own file, from git
    return module


def requests_of(layout: Layout, replies: list[str]) -> list[list[dict[str, str]]]:
    """The four requests of a 3-turn refine run given the turns' replies."""
    build: list[Callable[[], list[tuple[str, str]]]] = [
        lambda: layout.first_turn_messages(QUESTION)
    ]
    for k in range(1, TURNS):
        build.append(lambda k=k: layout.later_turn_messages(QUESTION, replies[:k]))
    build.append(lambda: layout.synthesis_messages(QUESTION, replies[:TURNS]))
    return [[{"role": r, "content": c} for r, c in make()] for make in build]


GROQ_MODEL = "openai/gpt-oss-120b"


def steps_for(tokens: int | None) -> int:
    """Steps per scripted turn: the bench's own 3, or as many as bring a turn nearest `tokens`
    (as the fake server counts them)."""
    if tokens is None:
        return 3
    return min(range(1, 200), key=lambda n: abs(_tokens(later_turn(2, n)) - tokens))


def _tokens(text: str) -> int:
    return estimate_prompt_tokens([{"content": text}]) - 4  # a message's own 4 left out


async def groq_run(layout: Layout, steps: int) -> list[Usage]:
    """Each call's usage in a run on the fake server playing Groq's cache, the turns scripted
    with `steps` steps each: prompt and cached tokens as the server reports them, and the
    scripted reply's tokens (counted alike) as the completion."""
    replies = [first_turn(steps), later_turn(2, steps), later_turn(3, steps)]
    outputs = [*replies, synthesis(steps)]
    usages = []
    async with FakeServer(default="ok") as server, httpx.AsyncClient() as http:
        for messages, reply in zip(requests_of(layout, replies), outputs, strict=True):
            body = {"model": GROQ_MODEL, "messages": messages}
            usage = (
                await http.post(f"{server.groq_base_url}/openai/v1/chat/completions", json=body)
            ).json()["usage"]
            usages.append(
                Usage(
                    prompt_tokens=usage["prompt_tokens"],
                    cached_tokens=usage["prompt_tokens_details"]["cached_tokens"],
                    completion_tokens=_tokens(reply),
                )
            )
    return usages


def groq_table(layouts: dict[str, Layout], lengths: list[int | None]) -> None:
    """Per layout and turn length: the cached share of the run's input on the fake Groq, and
    what the run costs on Groq's gpt-oss-120b (genai-prices; cached input at its price), in
    all and its input alone (the completions are the same in every layout)."""
    print(f"fake Groq cache, {GROQ_MODEL} on groq priced by genai-prices, per 1,000 runs:")
    print(
        "| turn | layout | input sent | cached | share | cost | vs first | input cost | vs first |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for tokens in lengths:
        steps = steps_for(tokens)
        length = _tokens(later_turn(2, steps))
        first: tuple[float, float] | None = None
        for name, layout in layouts.items():
            usages = asyncio.run(groq_run(layout, steps))
            total = Usage.total(usages)
            cost = price_calls(usages, "groq", GROQ_MODEL)
            inputs = [u.model_copy(update={"completion_tokens": 0}) for u in usages]
            input_cost = price_calls(inputs, "groq", GROQ_MODEL)
            assert cost and input_cost, "genai-prices no longer prices Groq's gpt-oss-120b"
            first = first or (cost, input_cost)
            print(
                f"| {length} tokens | {name} | {total.prompt_tokens:,} | {total.cached_tokens:,} "
                f"| {total.cached_tokens / total.prompt_tokens:.1%} | ${cost * 1000:.3f} "
                f"| {cost / first[0]:.2f}x | ${input_cost * 1000:.3f} "
                f"| {input_cost / first[1]:.2f}x |"
            )


async def _call(
    http: httpx.AsyncClient, url: str, messages: list[dict[str, str]], max_tokens: int
) -> dict[str, Any]:
    body = {
        "model": "m",
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    text: list[str] = []
    first = None
    timings: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    sent = time.perf_counter()
    async with http.stream("POST", f"{url}/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    first = first or time.perf_counter() - sent
                    text.append(piece)
            timings = chunk.get("timings") or timings
            usage = chunk.get("usage") or usage
    return {"text": "".join(text), "ttft": first, "timings": timings, "usage": usage}


async def embedded_run(layout: Layout, max_tokens: int) -> dict[str, float]:
    """One 3-turn refine run with its synthesis on a fresh embedded llama.cpp server."""
    server = local.start(local.EMBEDDED_MODEL)
    try:
        replies: list[str] = []
        calls = []
        for k in range(TURNS + 1):
            messages = requests_of(layout, [*replies, "", "", ""])[k]
            # A connection per call: llama.cpp closes one after a streamed reply.
            async with httpx.AsyncClient(timeout=600) as http:
                call = await _call(http, server.openai_base_url, messages, max_tokens)
            calls.append(call)
            replies.append(call["text"])
    finally:
        server.stop()
    sent = sum(c["usage"].get("prompt_tokens", 0) for c in calls)
    evaluated = sum(c["timings"].get("prompt_n", 0) for c in calls)
    return {
        "sent": sent,
        "evaluated": evaluated,
        "cached": sum(c["timings"].get("cache_n", 0) for c in calls),
        "prompt_s": sum(c["timings"].get("prompt_ms", 0) for c in calls) / 1000,
        "synthesis_evaluated": calls[-1]["timings"].get("prompt_n", 0),
        "synthesis_ttft": calls[-1]["ttft"] or float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.prefix_cache", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs of each layout, alternated")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--before", default="7334803", help="git revision of the old layout")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="REV",
        help="another git revision whose layout joins the fake-Groq table (repeatable)",
    )
    parser.add_argument(
        "--turn-tokens",
        type=int,
        nargs="*",
        default=[400, 800],
        help="longer scripted turns (tokens) for the fake-Groq table, beside the bench's own",
    )
    parser.add_argument("--groq-only", action="store_true", help="skip the embedded model")
    args = parser.parse_args()
    layouts = {"before": old_layout(args.before), "now": prompts}
    compared = {
        f"before ({args.before})": layouts["before"],
        **{f"at {rev}": old_layout(rev) for rev in args.also},
        "now": prompts,
    }
    print(f"load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    groq_table(compared, [None, *args.turn_tokens])
    if args.groq_only:
        return
    results: dict[str, list[dict[str, float]]] = {name: [] for name in layouts}
    for _ in range(args.runs):
        for name, layout in layouts.items():
            run = asyncio.run(embedded_run(layout, args.max_tokens))
            results[name].append(run)
            print(name, {k: round(v, 3) for k, v in run.items()}, flush=True)
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"{name}: evaluated {med['evaluated']:.0f} of {med['sent']:.0f} sent "
            f"({med['evaluated'] / med['sent']:.0%}), cached {med['cached']:.0f}, "
            f"prompt {med['prompt_s']:.2f}s, synthesis evaluated "
            f"{med['synthesis_evaluated']:.0f}, synthesis TTFT {med['synthesis_ttft']:.2f}s"
        )


if __name__ == "__main__":
    main()
