"""Start-up: `llamaberry --help` wall time, and how long `llamaberry ui` takes to answer HTTP."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "llamaberry"
UI_TIMEOUT = 90.0


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GROQ_", "LLAMABERRY_"))}
    env["LLAMABERRY_HISTORY"] = "0"
    return env


def time_help(runs: int) -> list[float]:
    """Wall seconds of `llamaberry --help`, one fresh process per run (after one warm-up)."""
    times = []
    for i in range(runs + 1):
        started = time.perf_counter()
        subprocess.run([str(SCRIPT), "--help"], check=True, capture_output=True, env=_clean_env())
        if i:  # the first run warms the disk cache and the .pyc files
            times.append(time.perf_counter() - started)
    return times


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def time_ui() -> float:
    """Seconds from launching `llamaberry ui` to its page answering 200 on its port."""
    port = _free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(SCRIPT), "ui", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_clean_env(),
    )
    try:
        while time.perf_counter() - started < UI_TIMEOUT:
            if process.poll() is not None:
                raise RuntimeError(f"`llamaberry ui` exited with status {process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as page:
                    if page.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"`llamaberry ui` did not answer within {UI_TIMEOUT:g}s")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(quick: bool) -> dict[str, Any]:
    """Both start-up figures; the UI is skipped by --quick or when this checkout has none."""
    helps = time_help(5 if quick else 10)
    result: dict[str, Any] = {
        "help_runs": len(helps),
        "help_median_s": statistics.median(helps),
        "help_max_s": max(helps),
    }
    if quick:
        # One gradio launch is 10 to 40 s on this machine, for a figure with no target.
        result["ui_error"] = "skipped by --quick"
    elif (ROOT / "ui" / "app.py").is_file():
        try:
            uis = [time_ui() for _ in range(3)]
            result["ui_runs"] = len(uis)
            result["ui_median_s"] = statistics.median(uis)
        except RuntimeError as error:
            result["ui_error"] = str(error)
    else:
        result["ui_error"] = "no ui/app.py in this checkout"
    return result
