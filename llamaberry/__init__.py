"""llamaberry: make a fast hosted model think harder, show the thinking, and measure whether it
helped.

The names below load on first use, so `llamaberry --help` (whose code lives in this package)
does not pay for pydantic, the SDKs or anything else it does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS = {
    "ChatClient": "providers.base",
    "GroqClient": "providers.groq",
    "OpenAICompatibleClient": "providers.openai",
    "Comparison": "compare",
    "DEFAULT_MODEL": "core.settings",
    "Settings": "core.settings",
    "Engine": "engine",
    "RateLimiter": "providers.limits",
    "collect": "engine",
    "AuthenticationError": "core.errors",
    "ContextTooLongError": "core.errors",
    "InputError": "core.errors",
    "InvalidReplyError": "core.errors",
    "LlamaberryError": "core.errors",
    "MissingKeyError": "core.errors",
    "ModelNotFoundError": "core.errors",
    "ProviderError": "core.errors",
    "ProviderTimeoutError": "core.errors",
    "ProviderUnavailableError": "core.errors",
    "RunTimeoutError": "core.errors",
    "RateLimitError": "core.errors",
    "RunFailedError": "core.errors",
    "CallFinished": "core.events",
    "CallNote": "core.events",
    "CallStarted": "core.events",
    "Event": "core.events",
    "RunFinished": "core.events",
    "RunStarted": "core.events",
    "TextDelta": "core.events",
    "TextReset": "core.events",
    "ThinkingDelta": "core.events",
    "Call": "core.results",
    "FinalAnswer": "core.results",
    "Message": "core.results",
    "ReasoningStep": "core.results",
    "Run": "core.results",
    "Step": "core.results",
    "Synthesis": "core.results",
    "Turn": "core.results",
    "Usage": "core.results",
    "Store": "store",
}

__all__ = [
    "DEFAULT_MODEL",
    "AuthenticationError",
    "Call",
    "CallFinished",
    "CallNote",
    "CallStarted",
    "ChatClient",
    "Comparison",
    "ContextTooLongError",
    "Engine",
    "Event",
    "FinalAnswer",
    "GroqClient",
    "InputError",
    "InvalidReplyError",
    "LlamaberryError",
    "Message",
    "MissingKeyError",
    "ModelNotFoundError",
    "OpenAICompatibleClient",
    "ProviderError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RateLimitError",
    "RateLimiter",
    "ReasoningStep",
    "Run",
    "RunFailedError",
    "RunFinished",
    "RunStarted",
    "RunTimeoutError",
    "Settings",
    "Step",
    "Store",
    "Synthesis",
    "TextDelta",
    "TextReset",
    "ThinkingDelta",
    "Turn",
    "Usage",
    "collect",
]

if TYPE_CHECKING:  # what type checkers and editors see
    from llamaberry.compare import Comparison
    from llamaberry.core.errors import (
        AuthenticationError,
        ContextTooLongError,
        InputError,
        InvalidReplyError,
        LlamaberryError,
        MissingKeyError,
        ModelNotFoundError,
        ProviderError,
        ProviderTimeoutError,
        ProviderUnavailableError,
        RateLimitError,
        RunFailedError,
        RunTimeoutError,
    )
    from llamaberry.core.events import (
        CallFinished,
        CallNote,
        CallStarted,
        Event,
        RunFinished,
        RunStarted,
        TextDelta,
        TextReset,
        ThinkingDelta,
    )
    from llamaberry.core.results import (
        Call,
        FinalAnswer,
        Message,
        ReasoningStep,
        Run,
        Step,
        Synthesis,
        Turn,
        Usage,
    )
    from llamaberry.core.settings import DEFAULT_MODEL, Settings
    from llamaberry.engine import Engine, collect
    from llamaberry.providers.base import ChatClient
    from llamaberry.providers.groq import GroqClient
    from llamaberry.providers.limits import RateLimiter
    from llamaberry.providers.openai import OpenAICompatibleClient
    from llamaberry.store import Store


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llamaberry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
