"""llamaberry: make a fast hosted model think harder, show the thinking, and measure whether it
helped."""

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
)
from .events import (
    CallFinished,
    CallStarted,
    Event,
    RunFinished,
    RunStarted,
    TextDelta,
    TextReset,
)
from .results import Call, FinalAnswer, Message, ReasoningStep, Run, Step, Synthesis, Turn, Usage
from .store import Store

__all__ = [
    "DEFAULT_MODEL",
    "AuthenticationError",
    "Call",
    "CallFinished",
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
    "ReasoningStep",
    "Run",
    "RunFailedError",
    "RunFinished",
    "RunStarted",
    "Settings",
    "Step",
    "Store",
    "Synthesis",
    "TextDelta",
    "TextReset",
    "Turn",
    "Usage",
    "collect",
]
