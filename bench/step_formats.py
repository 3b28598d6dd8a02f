"""How often a real model's step is valid on the first try, asked with the step's JSON schema
and asked for any JSON object: `uv run python -m bench.step_formats [--base-url URL]`.

Points the steps mode at an OpenAI-compatible server (a llama.cpp server, vLLM, Ollama...), or
without `--base-url` at the embedded model (the `local` provider), and runs the same questions once per response format. `json_object` is forced the way the engine
falls back to it (as if the endpoint had refused a schema). For every step the first reply is
judged as sent: valid when it is a JSON object with a non-empty title and content and a
next_action of "continue" or "final_answer", with no mending. It also counts the steps usable on
the first try (mending allowed), the runs that finished, and the seconds. Not a test: figures
from a real model vary with its sampling and the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from llamaberry import Engine, Run, RunFinished
from llamaberry.modes.steps import _StepReply

QUESTIONS = (
    "What is 12 + 7?",
    'How many times does the letter r appear in "strawberry"?',
    "What is the capital of France?",
    "Is 17 a prime number?",
    "A train leaves at 3 pm and travels for 2 hours. When does it arrive?",
)
FORMATS = ("json_schema", "json_object")


def valid_as_sent(reply: str) -> bool:
    """Whether a step reply is a valid step exactly as the model wrote it."""
    try:
        data = json.loads(reply)
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    try:
        _StepReply.model_validate(data)
    except ValueError:
        return False
    return True


def first_tries(run: Run) -> list[tuple[bool, bool]]:
    """For each step asked for: (valid as sent, usable) on its first try."""
    seen: dict[int, tuple[bool, bool]] = {}
    for call in run.calls:
        if call.kind != "step" or call.index in seen:
            continue
        step = next((s for s in run.result.steps if s.index == call.index), None)
        usable = step is not None and step.attempts == 1
        seen[call.index] = (valid_as_sent(call.reply), usable)
    return list(seen.values())


async def measure(fmt: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run every question `args.repeats` times with one response format."""
    results: list[tuple[bool, bool]] = []
    ok = runs = 0
    started = time.perf_counter()
    where: dict[str, Any] = (
        {"provider": "openai", "base_url": args.base_url, "api_key": "none", "model": args.model}
        if args.base_url
        else {"provider": "local"}
    )
    async with Engine(**where, max_tokens=args.max_tokens, history=False) as engine:
        if fmt == "json_object":
            engine.client.json_schema_refused = True
        for _ in range(args.repeats):
            for question in QUESTIONS[: args.questions]:
                run = None
                async for event in engine.steps_stream(
                    question, min_steps=args.steps, max_steps=args.steps
                ):
                    if isinstance(event, RunFinished):
                        run = event.run
                assert run is not None
                runs += 1
                ok += run.ok
                tries = first_tries(run)
                results += tries
                formats = {c.response_format for c in run.calls if c.kind == "step"}
                print(
                    f"{fmt:11} {run.status:6} steps valid first try "
                    f"{sum(v for v, _ in tries)}/{len(tries)} asked as {sorted(formats)} "
                    f"{run.seconds:5.1f}s  {(run.error or '')[:90]}",
                    flush=True,
                )
    steps = len(results)
    return {
        "format": fmt,
        "steps": steps,
        "valid_first_try": sum(v for v, _ in results),
        "usable_first_try": sum(u for _, u in results),
        "runs": runs,
        "runs_ok": ok,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    """Measure both forms and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base-url", help="e.g. http://127.0.0.1:8080/v1 (default: the embedded model)"
    )
    parser.add_argument("--model", default="local")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--questions", type=int, default=len(QUESTIONS))
    parser.add_argument("--steps", type=int, default=3, help="steps per run (min = max)")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--only", choices=FORMATS)
    args = parser.parse_args()
    rows = [asyncio.run(measure(fmt, args)) for fmt in FORMATS if args.only in (None, fmt)]
    print(
        "\n| response_format | steps valid on the first try (as sent) | usable on the first "
        "try (mended) | runs finished | seconds |"
    )
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        share = row["valid_first_try"] / row["steps"] if row["steps"] else 0.0
        print(
            f"| `{row['format']}` | {row['valid_first_try']} of {row['steps']} ({share:.0%}) | "
            f"{row['usable_first_try']} of {row['steps']} | {row['runs_ok']} of {row['runs']} | "
            f"{row['seconds']} |"
        )


if __name__ == "__main__":
    main()
