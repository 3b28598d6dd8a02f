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
    "ChatClient": "clients",
    "GroqClient": "clients",
    "OpenAICompatibleClient": "clients",
    "Comparison": "compare",
    "DEFAULT_MODEL": "config",
    "Settings": "config",
    "Engine": "engine",
    "RateLimiter": "limits",
    "collect": "engine",
    "AuthenticationError": "errors",
    "ContextTooLongError": "errors",
    "InputError": "errors",
    "InvalidReplyError": "errors",
    "LlamaberryError": "errors",
    "MissingKeyError": "errors",
    "ModelNotFoundError": "errors",
    "ProviderError": "errors",
    "ProviderTimeoutError": "errors",
    "ProviderUnavailableError": "errors",
    "RunTimeoutError": "errors",
    "RateLimitError": "errors",
    "RunFailedError": "errors",
    "CallFinished": "events",
    "CallNote": "events",
    "CallStarted": "events",
    "Event": "events",
    "RunFinished": "events",
    "RunStarted": "events",
    "TextDelta": "events",
    "TextReset": "events",
    "ThinkingDelta": "events",
    "Call": "results",
    "FinalAnswer": "results",
    "Message": "results",
    "ReasoningStep": "results",
    "Run": "results",
    "Step": "results",
    "Synthesis": "results",
    "Turn": "results",
    "Usage": "results",
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
    from .clients import ChatClient, GroqClient, OpenAICompatibleClient
    from .compare import Comparison
    from .config import DEFAULT_MODEL, Settings
    from .engine import Engine, collect
    from .errors import (
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
    from .events import (
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
    from .limits import RateLimiter
    from .results import (
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
    from .store import Store


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llamaberry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
