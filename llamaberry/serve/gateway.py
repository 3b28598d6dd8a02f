"""The engine behind the endpoint (every request is a run on it, with its own model and
sampling settings), and the modes it offers as model names."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from llamaberry.core.errors import LlamaberryError
from llamaberry.providers.limits import LimiterPool
from llamaberry.serve.schema import ChatRequest, ServeError

if TYPE_CHECKING:
    from llamaberry.core.settings import Settings
    from llamaberry.engine import Engine
    from llamaberry.store import Store

log = logging.getLogger("llamaberry.serve")


def mode_names() -> list[str]:
    """Every mode the engine can run, as model names (read from the registry)."""
    from llamaberry import modes

    return modes.names()


def mode_options(mode: str) -> frozenset[str]:
    """The request keys a mode takes as options (its options model's fields)."""
    from llamaberry import modes

    return frozenset(modes.get(mode).options.model_fields)


def own_options(mode: str, options: dict[str, Any]) -> dict[str, Any]:
    """The request's options that `mode` takes (the registry picks them)."""
    from llamaberry import modes

    return modes.own_options(mode, options)


def check_options(mode: str, options: dict[str, Any]) -> None:
    """400 for a key the mode does not take, naming the options it does take."""
    unknown = sorted(set(options) - set(own_options(mode, options)))
    if unknown:
        raise ServeError(
            400,
            f"The {mode} mode has no option {', '.join(unknown)}"
            + (
                f"; it takes {', '.join(sorted(mode_options(mode)))}."
                if mode_options(mode)
                else "."
            ),
            code="unknown_option",
        )


class Gateway:
    """The engine behind the endpoint: one for every request, whatever it asks.

    A request's upstream model and sampling settings (temperature, max_tokens, reasoning
    effort) are that run's own settings on the one engine, so requests share its connection
    pool, its history writer and, per upstream model, one rate limiter.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        history: bool | Store | None = None,
        rate_period: float = 60.0,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.history = history
        # Mode options (`turns`...) the engine uses when a request does not give its own.
        self.options = dict(options or {})
        # The window the rpm/tpm limits are counted over (tests shorten it).
        self.rate_period = rate_period
        self._engine: Engine | None = None
        self._models: list[str] | None = None

    def engine(self) -> Engine:
        """The endpoint's engine, built on first use."""
        if self._engine is None:
            from llamaberry.engine import Engine

            self._engine = Engine(
                settings=self.settings,
                limiters=LimiterPool(period=self.rate_period),
                history=self.history,
                **self.options,
            )
        return self._engine

    @staticmethod
    def run_settings(request: ChatRequest, upstream: str | None = None) -> dict[str, Any]:
        """What a request chooses for its run: the upstream model and sampling settings."""
        return {
            "model": upstream,
            "temperature": request.temperature,
            "max_tokens": request.max_completion_tokens or request.max_tokens,
            "reasoning_effort": request.reasoning_effort,
        }

    async def upstream_models(self) -> list[str]:
        """The upstream endpoint's models, asked each time (a model loaded or dropped upstream
        shows at once); the last list it gave when it will not answer now, else none."""
        try:
            self._models = await self.engine().models()
        except LlamaberryError as error:
            log.warning("llamaberry serve: upstream models not listed: %s", error)
        return self._models or []

    async def aclose(self) -> None:
        """Close the engine."""
        if self._engine is not None:
            await self._engine.aclose()
            self._engine = None
