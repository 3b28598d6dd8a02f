"""Prefix caching: a 3-turn refine run laid out as today (one growing conversation) against the
layout before it (each call its own system prompt, earlier turns pasted into one user message),
whose prompt functions are read from git at `--before`.

1. The fake server playing Groq's cache: the share of the run's input tokens it reports cached,
   with the bench's scripted replies, both layouts sending the same replies back.
2. The embedded model (SmolLM2-135M, llama.cpp in this process): a fresh server for each run,
   the layouts alternated; per run, the prompt tokens sent, those llama.cpp evaluated
   (`timings.prompt_n`) and read from its cache (`timings.cache_n`), and the synthesis call's
   time to its first token.

`uv run python -m bench.prefix_cache [--runs N] [--max-tokens N] [--before REV]`
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

from llamaberry.modes import prompts
from llamaberry.providers import local
from llamaberry.testing import FakeServer

from .replies import QUESTION, first_turn, later_turn

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


async def groq_cache_share(layout: Layout) -> tuple[int, int]:
    """(cached, sent) prompt tokens of one run on the fake server playing Groq's cache."""
    replies = [first_turn(3), later_turn(2, 3), later_turn(3, 3)]
    cached = sent = 0
    async with FakeServer(default="ok") as server, httpx.AsyncClient() as http:
        for messages in requests_of(layout, replies):
            body = {"model": "openai/gpt-oss-120b", "messages": messages}
            usage = (
                await http.post(f"{server.groq_base_url}/openai/v1/chat/completions", json=body)
            ).json()["usage"]
            sent += usage["prompt_tokens"]
            cached += usage["prompt_tokens_details"]["cached_tokens"]
    return cached, sent


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
    args = parser.parse_args()
    layouts = {"before": old_layout(args.before), "now": prompts}
    print(f"load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for name, layout in layouts.items():
        cached, sent = asyncio.run(groq_cache_share(layout))
        print(f"fake Groq cache, {name}: {cached}/{sent} cached = {cached / sent:.0%}")
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
