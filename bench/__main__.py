"""`uv run python -m bench [--quick] [--only SECTION ...]`: measure, then write RESULTS.md."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import cold, concurrency, overhead, report, startup, streaming, throughput

SECTIONS = (
    "overhead",
    "concurrency",
    "throughput",
    "streaming",
    "cold",
    "startup",
    "ui_latency",
)
# Replies go out this many words per chunk: enough chunks per call (12 to 16) that the
# per-chunk path counts, few enough that 1000 concurrent runs fit in the time budget.
CHUNK_WORDS = 8
HERE = Path(__file__).resolve().parent


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def ui_latency(quick: bool) -> dict[str, Any]:
    """The web UI's first-token latency, from bench/ui_latency.py (another engineer's)."""
    done = subprocess.run(
        [sys.executable, str(HERE / "ui_latency.py"), "--runs", "5" if quick else "15"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
    # Gradio prints a line of its own when the app closes, so read the figures from the end.
    return json.loads(done.stdout[done.stdout.index("{") :])


def main() -> None:
    """Run the chosen sections and write the report."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions, shorter throughput run"
    )
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run just this section (repeatable)"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the figures, leave RESULTS.md alone"
    )
    parser.add_argument(
        "--report-from",
        metavar="FILE",
        help="measure nothing: rewrite the report from the JSON a previous run printed",
    )
    args = parser.parse_args()
    if args.report_from:
        saved = json.loads(Path(args.report_from).read_text())
        for path in report.write(saved["figures"], saved["meta"]):
            print(f"wrote {path.relative_to(HERE.parent)}", file=sys.stderr)
        return
    chosen = args.only or [s for s in SECTIONS if s != "ui_latency" or not args.quick]

    measures = {
        "overhead": lambda: overhead.measure(args.quick, CHUNK_WORDS),
        # --quick stops at 100 runs: a 1000-run batch alone takes most of a minute.
        "concurrency": lambda: concurrency.measure(
            args.quick, CHUNK_WORDS, concurrency.LEVELS[:-1] if args.quick else concurrency.LEVELS
        ),
        "throughput": lambda: throughput.measure(args.quick, CHUNK_WORDS),
        "streaming": lambda: streaming.measure(args.quick, CHUNK_WORDS),
        "cold": lambda: cold.measure(args.quick),
        "startup": lambda: startup.measure(args.quick),
        "ui_latency": lambda: ui_latency(args.quick),
    }
    meta: dict[str, Any] = {"quick": args.quick, "chunk_words": CHUNK_WORDS, "skipped": []}
    meta["load_before"] = _load()
    meta["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    began = time.perf_counter()
    figures: dict[str, Any] = {}
    for name in chosen:
        if name == "ui_latency" and not (HERE / "ui_latency.py").is_file():
            meta["skipped"].append((name, "bench/ui_latency.py is not in this checkout"))
            continue
        if name == "ui_latency" and not shutil.which("chromium"):
            meta["skipped"].append((name, "no chromium on this machine"))
            continue
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            figures[name] = measures[name]()
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as error:
            meta["skipped"].append((name, f"failed: {error}"))
            print(f"bench: {name} failed: {error}", file=sys.stderr)
            continue
        print(
            f"bench: {name} done in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    meta["seconds"] = time.perf_counter() - began
    meta["load_after"] = _load()
    print(json.dumps({"figures": figures, "meta": meta}, indent=1))
    if not args.no_write:
        for path in report.write(figures, meta):
            print(f"wrote {path.relative_to(HERE.parent)}", file=sys.stderr)


if __name__ == "__main__":
    main()
