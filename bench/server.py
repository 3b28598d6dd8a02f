"""The fake server in a process of its own, so its CPU and memory never count as the client's.

`python -m bench.server --latency 0.2 ...` prints `{"port": N}` and then answers one command
per line on stdin: `stats` (a JSON line), `reset`, `quit`. `ServerProcess` drives it.

Timestamps are `time.monotonic()`, which on Linux is CLOCK_MONOTONIC and so comparable
between the server and client processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

from llamaberry.testing import FakeServer

from .replies import make_script


class _StampingWriter:
    """Wraps a connection's writer and notes when each write of a reply is handed to the OS."""

    def __init__(self, writer: asyncio.StreamWriter, stamps: list[float]) -> None:
        self._writer = writer
        self._stamps = stamps

    def write(self, data: bytes) -> None:
        self._writer.write(data)
        self._stamps.append(time.monotonic())

    async def drain(self) -> None:
        await self._writer.drain()


class StampingServer(FakeServer):
    """A FakeServer that records when it admits requests and sends each reply's first text.

    Admission is noted by the reply handler, which the fake calls only once a request is
    inside the rate limit. Send times need the one private hook, `_stream(writer, ...)`:
    with a chunk delay, the head and the role chunk go out in one write and every later
    chunk in a write of its own, so the second write is the first visible text.
    """

    def __init__(self, steps: int, chunk_words: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.admitted: list[float] = []
        self.first_content: list[float] = []
        script = make_script(steps=steps, chunk_words=chunk_words)

        def stamped(request):
            self.admitted.append(time.monotonic())
            return script(request)

        self.reply_with(stamped)
        self._stamped = stamped

    async def _stream(self, writer, *args: Any, **kwargs: Any) -> None:
        stamps: list[float] = []
        await super()._stream(_StampingWriter(writer, stamps), *args, **kwargs)
        if len(stamps) > 1:
            self.first_content.append(stamps[1])

    def stats(self) -> dict[str, Any]:
        """What the parent asks for: counts and timestamps."""
        return {
            "requests": len(self.requests),
            "cpu": time.process_time(),
            "rate_limited": self.rate_limited,
            "admitted": self.admitted,
            "first_content": self.first_content,
        }

    def clear(self) -> None:
        """Forget history but keep the reply script."""
        self.reset()
        self.reply_with(self._stamped)
        self.admitted.clear()
        self.first_content.clear()


async def _serve(args: argparse.Namespace) -> None:
    server = StampingServer(
        steps=args.steps,
        chunk_words=args.chunk_words,
        latency=args.latency,
        chunk_delay=args.chunk_delay,
        rpm_limit=args.rpm or None,
        limit_window=args.window,
        tls=args.tls,
    )
    async with server:
        print(json.dumps({"port": server.port, "ca_file": server.ca_file}), flush=True)
        loop = asyncio.get_running_loop()
        while True:
            command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if command == "stats":
                print(json.dumps(server.stats()), flush=True)
            elif command == "reset":
                server.clear()
                print("{}", flush=True)
            else:  # "quit", or EOF when the parent went away
                return


class ServerProcess:
    """Start `bench.server` in a child process; use as a context manager."""

    def __init__(
        self,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        rpm: int | None = None,
        window: float = 60.0,
        steps: int = 3,
        chunk_words: int = 1,
        tls: bool = False,
    ) -> None:
        self.tls = tls
        self.args = [
            f"--latency={latency}",
            f"--chunk-delay={chunk_delay}",
            f"--rpm={rpm or 0}",
            f"--window={window}",
            f"--steps={steps}",
            f"--chunk-words={chunk_words}",
            *(["--tls"] if tls else []),
        ]
        self.port = 0
        # With TLS: the PEM file of the throwaway CA that signed the server's certificate,
        # which a client process trusts through SSL_CERT_FILE.
        self.ca_file: str | None = None
        self._process: subprocess.Popen[str] | None = None

    @property
    def base_url(self) -> str:
        """The host URL for `groq.AsyncGroq` and `Engine(provider="groq")`."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.server", *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        started = json.loads(self._ask(None))
        self.port, self.ca_file = started["port"], started["ca_file"]
        return self

    def __exit__(self, *exc_info: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.write("quit\n")
            process.stdin.close()
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()

    def stats(self) -> dict[str, Any]:
        """Counts and timestamps recorded since the last reset."""
        return json.loads(self._ask("stats"))

    def reset(self) -> None:
        """Forget recorded requests, timestamps and rate-limit history."""
        self._ask("reset")

    def _ask(self, command: str | None) -> str:
        assert self._process is not None and self._process.stdout is not None
        if command is not None:
            assert self._process.stdin is not None
            self._process.stdin.write(command + "\n")
            self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the bench server exited unexpectedly")
        return line


def main() -> None:
    """Run the server until told to quit."""
    parser = argparse.ArgumentParser(prog="python -m bench.server")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--rpm", type=int, default=0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--chunk-words", type=int, default=1)
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a throwaway CA")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
