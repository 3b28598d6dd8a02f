"""Whether, and after how long, a failed call is tried again.

Decided here and nowhere else: the SDKs' own retries are switched off (see `transport.build_sdk`),
so the two never multiply. The loop that applies the policy is `SDKClient.stream`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llamaberry.core.errors import (
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)


@dataclass
class RetryPolicy:
    """Whether, and after how long, a failed call is tried again: the one place that decides."""

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0
    # A 429 whose retry-after is longer than this fails at once with the reset time.
    max_wait: float = 90.0

    def delay(self, error: ProviderError, attempt: int) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None when `error` is final."""
        if attempt > self.max_retries:
            return None
        if isinstance(error, RateLimitError):
            if error.status_code == 413:  # the request alone exceeds the limit: waiting won't help
                return None
            if error.reset_in is not None:
                return error.reset_in if error.reset_in <= self.max_wait else None
            return self.backoff(attempt)
        if isinstance(error, ProviderUnavailableError | ProviderTimeoutError):
            return self.backoff(attempt)
        return None

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, for errors that don't say how long to wait."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
