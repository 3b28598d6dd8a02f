"""Run the `llamaberry` command in a pseudo-terminal, as a person at a terminal would see it."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass

# CSI sequences (colours, cursor moves), OSC sequences (links) and lone escapes.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")


@dataclass
class Screen:
    """What a command wrote to its terminal (stdout and stderr both, as a terminal shows them)."""

    returncode: int
    raw: str  # with escape sequences
    seconds: float

    @property
    def text(self) -> str:
        """The text without escape sequences or carriage returns."""
        return _ESCAPES.sub("", self.raw).replace("\r", "")


def in_terminal(
    args: list[str], env: dict[str, str], *, columns: int = 100, timeout: float = 120
) -> Screen:
    """Run `python -m llamaberry ARGS` with a pseudo-terminal for stdin, stdout and stderr."""
    leader, follower = os.openpty()
    os.set_blocking(leader, False)
    import fcntl
    import struct
    import termios

    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "llamaberry", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**env, "COLUMNS": str(columns), "TERM": "xterm-256color"},
        start_new_session=True,
    )
    os.close(follower)
    chunks: list[bytes] = []
    try:
        while True:
            if time.monotonic() - started > timeout:
                process.kill()
                raise TimeoutError(f"{args} still running after {timeout} s")
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the follower closed: the process is gone
                    data = b""
                if data:
                    chunks.append(data)
                    continue
            if process.poll() is not None and not ready:
                break
            if ready and not data:
                break
        process.wait(timeout=30)
    finally:
        os.close(leader)
    return Screen(
        process.returncode, b"".join(chunks).decode("utf-8", "replace"), time.monotonic() - started
    )
