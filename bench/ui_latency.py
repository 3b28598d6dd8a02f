"""First-token latency of the web UI: from the fake server sending turn 1's first token to that
token being visible in the page, in headless Chromium.

    uv run python bench/ui_latency.py [--runs 20]

The fake server answers turn 1 with a reply whose first content chunk follows its opening chunk
by a known delay, so the moment it is written is the handler's wall-clock time plus that delay.
The page records, with a MutationObserver, the wall-clock time at which the token first shows up
in the Turns section's visible text (and the next animation frame, when it is painted). Both
clocks are the same machine's. Needs Debian's chromium at /usr/bin/chromium; downloads nothing.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llamaberry_ui.app import build_app, serve  # noqa: E402

from llamaberry.core.settings import Settings  # noqa: E402
from llamaberry.testing import FakeServer, RecordedRequest, Reply  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Gap between the stream's opening chunk and its first token: long enough that the page has
# drawn the empty turn before the token arrives, so only the token's own path is measured.
FIRST_TOKEN_DELAY = 0.25
SYNTHESIS = "## Concise Answer\nDone."

WATCH = """(marker) => {
  window.__seen = null; window.__painted = null;
  const box = document.querySelector('#refine-sections');
  const observer = new MutationObserver(() => {
    if (window.__seen === null && box.innerText.includes(marker)) {
      window.__seen = performance.timeOrigin + performance.now();
      requestAnimationFrame(() => {
        window.__painted = performance.timeOrigin + performance.now();
      });
      observer.disconnect();
    }
  });
  observer.observe(box, {subtree: true, childList: true, characterData: true});
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 1),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
        "min_ms": round(ordered[0], 1),
        "max_ms": round(ordered[-1], 1),
    }


def main() -> None:
    """Measure and print the first-token latency over several runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    sent: dict[str, float] = {}

    def handler(request: RecordedRequest) -> Reply | str:
        system = request.system or ""
        if "## Concise Answer" in system:
            return SYNTHESIS
        marker = (request.user or "").split("bench-")[-1].split()[0]
        sent[marker] = time.time() + FIRST_TOKEN_DELAY
        return Reply(f"TOKEN{marker} and the rest of turn one", chunk_delay=FIRST_TOKEN_DELAY)

    seen, painted = [], []
    with FakeServer() as server:
        server.reply_with(handler)
        settings = Settings(api_key="bench-key", base_url=server.groq_base_url)
        app = build_app(settings, history=False, options={"turns": 1})
        port = free_port()
        serve(app, port=port, block=False, quiet=True)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page()
                page.set_default_timeout(30_000)
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_selector("#refine-q textarea")
                for run in range(args.runs + 1):  # the first run warms up and is not counted
                    marker = f"m{run}x"
                    page.evaluate(WATCH, f"TOKEN{marker}")
                    page.fill("#refine-q textarea", f"Question bench-{marker} please")
                    page.click("#refine-run")
                    page.wait_for_function("window.__painted !== null")
                    page.locator("#refine-summary").get_by_text("Done", exact=False).wait_for()
                    if run == 0:
                        continue
                    at_dom, at_paint = page.evaluate("[window.__seen, window.__painted]")
                    seen.append(at_dom - sent[marker] * 1000)
                    painted.append(at_paint - sent[marker] * 1000)
                browser.close()
        finally:
            app.close()

    result = {
        "runs": args.runs,
        "in_dom": summary(seen),
        "painted": summary(painted),
        "target_ms": 300,
    }
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ui_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
