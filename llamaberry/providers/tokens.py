"""Token estimates from characters, for when no tokenizer is at hand: one formula for every
caller (fitting a request into the context window, the rate limiter's charge before a call is
answered, the usage of a reply whose server did not say, or of one we stopped reading).

Deliberately generous: a request judged to fit does fit, and the limiter never charges a call
less than it turns out to use. Three ASCII characters a token (English runs nearer four), and
one token for every other character (a CJK character is often one, sometimes more).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from llamaberry.core.results import Message

# Tokens a chat template adds around each message, and once around the whole conversation.
PER_MESSAGE = 8
PER_REQUEST = 8


def estimate_tokens(text: str) -> int:
    """A generous estimate of `text`'s tokens: three ASCII characters, or one other, a token."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / 3) + (len(text) - ascii_chars)


def estimate_prompt(messages: Sequence[Message]) -> int:
    """A generous estimate of the prompt tokens `messages` take, chat template included."""
    return PER_REQUEST + sum(estimate_tokens(m.content) + PER_MESSAGE for m in messages)
