"""Client-side pacing: one limiter per engine, shared by every run it makes.

Requests and tokens per minute are budgeted two ways: our own sliding window (when `rpm` or
`tpm` is configured) and the provider's `x-ratelimit-*` headers, which say how much of its
window is left and when it refills. Either way a batch slows down *before* the provider starts
answering 429.

How often calls start (`rpm`) is paced by `asyncio-throttle`, which counts a call from when it
is sent. The provider counts it a little later, on arrival (about 0.1 s at a window's
roll-over), so a window of exactly the provider's length would free a slot just before the
provider's does and draw a 429 at every roll-over. Ours is longer by `rollover_margin()` (1 s
in a minute): no 429s, for under 2% of the rate. Tokens (`tpm`) are budgeted by our own window,
where a call counts from the moment the provider answers it, and is charged what it used.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

from asyncio_throttle import Throttler

from llamaberry.core.errors import RateLimitError

if TYPE_CHECKING:
    from llamaberry.core.settings import Settings

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# The longest wait a provider's header is believed to ask for: its longest window (a day)
# resets within this. `retry-after: inf`, or a year, is read as this much.
MAX_RESET = 86400.0


def parse_duration(value: str | None) -> float | None:
    """Read a provider duration (`7.66s`, `2m59.56s`, `120ms`, or bare seconds) as seconds,
    at most `MAX_RESET`; None when it is not a duration (`nan` included)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            return None
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if math.isnan(seconds):
        return None
    return min(MAX_RESET, max(0.0, seconds))


class Slot:
    """One call's place in the window: when it counts from and the tokens it is charged."""

    __slots__ = ("at", "tokens")

    def __init__(self, at: float, tokens: int) -> None:
        self.at = at
        self.tokens = tokens


def rollover_margin(period: float) -> float:
    """How much longer than the provider's window our request window is (1 s in a minute).

    At least 0.3 s: the lag between our send and the provider's count does not shrink with
    the window (tests use windows of a second), and on a busy machine the event loop alone can
    spread it by over 0.1 s (measured with a fake server in the same process on a loaded
    2-core box). Only windows under 15 s get the floor; a minute's window is unchanged.
    """
    return min(1.0, max(0.3, period * 0.02))


class RateLimiter:
    """Paces calls to stay under requests- and tokens-per-minute limits."""

    def __init__(
        self, rpm: int | None = None, tpm: int | None = None, *, period: float = 60.0
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        # `period` is the window both limits are counted over; tests shorten it.
        self.period = period
        # Request pacing: asyncio-throttle's sliding window, lengthened by the roll-over margin.
        self.throttler = (
            Throttler(rate_limit=rpm, period=period + rollover_margin(period)) if rpm else None
        )
        # Every call still in the token window, oldest first (kept only when `tpm` is set).
        self._window: deque[Slot] = deque()
        self._lock = asyncio.Lock()
        # What the provider last told us, kept as absolute monotonic times.
        self._tokens_left: int | None = None
        self._tokens_reset_at = 0.0
        self._requests_left: int | None = None
        self._requests_reset_at = 0.0
        self._paused_until = 0.0
        # Set when the provider said its limit resets later than anyone should wait: until
        # then every call would only draw another 429, so callers that send many (eval) stop.
        self._blocked_until = 0.0
        self.blocked_limit = ""
        self.waited = 0.0

    async def acquire(self, tokens: int, *, max_wait: float | None = None) -> Slot:
        """Wait until a call estimated at `tokens` tokens may start, then count it.

        When the provider said its limit resets later than `max_wait` seconds from now (a
        call's timeout), `RateLimitError` at once, naming when: waiting would only end in a
        timeout, and would hold every call behind this one.
        """
        async with self._lock:
            if max_wait is not None:
                self._refuse_beyond(tokens, max_wait)
            await self._sleep_until(self._paused_until)
            await self._wait_for_provider_budget(tokens)
            if self.tpm:
                await self._wait_for_own_budget(tokens)
            if self.throttler is not None:
                before = time.monotonic()
                await self.throttler.acquire()
                self.waited += time.monotonic() - before
            slot = Slot(time.monotonic(), tokens)
            if self.tpm:
                self._window.append(slot)
            if self._tokens_left is not None:
                self._tokens_left -= tokens
            if self._requests_left is not None:
                self._requests_left -= 1
        return slot

    def answered(self, slot: Slot) -> None:
        """The provider has answered the call: count it in the window from now on."""
        # Moved in place: a slow call may then hold faster ones behind it a little past their
        # time, which only errs on the safe side, and costs nothing to keep.
        slot.at = time.monotonic()

    def settle(self, slot: Slot, actual: int) -> None:
        """Charge a call what it really used instead of its estimate."""
        slot.tokens = actual

    def observe(self, headers: Mapping[str, str]) -> None:
        """Take in the provider's `x-ratelimit-*` headers from any response."""
        now = time.monotonic()
        tokens_left = headers.get("x-ratelimit-remaining-tokens")
        reset = parse_duration(headers.get("x-ratelimit-reset-tokens"))
        if tokens_left is not None and tokens_left.isdigit():
            self._tokens_left = int(tokens_left)
            self._tokens_reset_at = now + (reset or 0.0)
        requests_left = headers.get("x-ratelimit-remaining-requests")
        reset = parse_duration(headers.get("x-ratelimit-reset-requests"))
        if requests_left is not None and requests_left.isdigit():
            self._requests_left = int(requests_left)
            self._requests_reset_at = now + (reset or 0.0)

    def pause(self, seconds: float) -> None:
        """Hold every call of this engine for `seconds` (after a 429 with retry-after)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def block(self, seconds: float, limit: str) -> None:
        """Record that the provider's `limit` resets only in `seconds` (see `blocked_for`)."""
        until = time.monotonic() + seconds
        if until > self._blocked_until:
            self._blocked_until, self.blocked_limit = until, limit

    def blocked_for(self) -> float:
        """Seconds until the provider's limit resets after `block` (0 when it has)."""
        return max(0.0, self._blocked_until - time.monotonic())

    def _refuse_beyond(self, tokens: int, max_wait: float) -> None:
        now = time.monotonic()
        waits = [(self._paused_until - now, "the provider's rate limit")]
        if self._requests_left is not None and self._requests_left <= 0:
            waits.append((self._requests_reset_at - now, "requests (none left)"))
        if self._tokens_left is not None and self._tokens_left < tokens:
            waits.append((self._tokens_reset_at - now, "tokens (too few left)"))
        wait, limit = max(waits)
        if wait > max_wait:
            raise RateLimitError(
                limit, wait, detail=f"longer than the call's {max_wait:g}s timeout allows"
            )

    async def _wait_for_provider_budget(self, tokens: int) -> None:
        now = time.monotonic()
        if self._requests_left is not None and self._requests_left <= 0:
            if self._requests_reset_at > now:
                await self._sleep_until(self._requests_reset_at)
            self._requests_left = None
        now = time.monotonic()
        if self._tokens_left is not None and self._tokens_left < tokens:
            if self._tokens_reset_at > now:
                await self._sleep_until(self._tokens_reset_at)
            self._tokens_left = None

    async def _wait_for_own_budget(self, tokens: int) -> None:
        while True:
            now = time.monotonic()
            while self._window and self._window[0].at <= now - self.period:
                self._window.popleft()
            # A single call bigger than the whole budget can never fit; let it through alone.
            if (
                not self.tpm
                or not self._window
                or sum(s.tokens for s in self._window) + tokens <= self.tpm
            ):
                return
            await self._sleep_until(self._window[0].at + self.period)

    async def _sleep_until(self, when: float) -> None:
        delay = when - time.monotonic()
        if delay > 0:
            self.waited += delay
            await asyncio.sleep(delay)


class LimiterPool:
    """One rate limiter per key, endpoint and model, for engines that share them.

    The provider counts its limits per key and model, so every engine that calls the same
    model with the same key (the web UI's sessions, `serve`'s engines per sampling setting)
    must pace through one limiter. The key is kept only as part of a digest.
    """

    def __init__(self, *, period: float = 60.0, size: int = 256) -> None:
        # The window the limiters count over (tests shorten it).
        self.period = period
        # At most this many are kept (a page or a client can name any model or key): the one
        # used least recently goes first.
        self.size = size
        self._limiters: dict[str, RateLimiter] = {}

    def get(self, settings: Settings) -> RateLimiter:
        """The limiter for `settings`' key, endpoint and model, made on first use."""
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        identity = f"{settings.provider}|{settings.base_url}|{settings.model}|{key}"
        digest = hashlib.sha256(identity.encode()).hexdigest()
        limiter = self._limiters.pop(digest, None)
        if limiter is None:
            limiter = RateLimiter(rpm=settings.rpm, tpm=settings.tpm, period=self.period)
            while len(self._limiters) >= self.size:
                del self._limiters[next(iter(self._limiters))]
        self._limiters[digest] = limiter  # now the most recently used
        return limiter

    def __len__(self) -> int:
        return len(self._limiters)
