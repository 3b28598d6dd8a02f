"""The engines behind the endpoint, one per upstream model and sampling setting, and the modes
they offer as model names."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from llamaberry.core.errors import InputError, LlamaberryError
from llamaberry.providers.limits import LimiterPool
from llamaberry.serve.schema import ChatRequest

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


class Gateway:
    """The engines behind the endpoint: one per upstream model and sampling setting.

    Engines for the same upstream model share one rate limiter, so a burst of requests with
    different temperatures still paces as one client of that model.
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
        # Mode options (`turns`...) every engine uses when a request does not give its own.
        self.options = dict(options or {})
        # The window the rpm/tpm limits are counted over (tests shorten it).
        self.rate_period = rate_period
        self._engines: dict[tuple[Any, ...], Engine] = {}
        self._limiters = LimiterPool(period=rate_period)
        self._models: list[str] | None = None

    def engine(self, request: ChatRequest | None = None, upstream: str | None = None) -> Engine:
        """The engine for a request's upstream model and sampling settings (default: ours)."""
        from llamaberry.engine import Engine

        base = self.settings
        wanted = {
            "model": upstream or base.model,
            "temperature": base.temperature,
            "max_tokens": base.max_tokens,
            "reasoning_effort": base.reasoning_effort,
        }
        if request is not None:
            asked = {
                "temperature": request.temperature,
                "max_tokens": request.max_completion_tokens or request.max_tokens,
                "reasoning_effort": request.reasoning_effort,
            }
            wanted |= {k: v for k, v in asked.items() if v is not None}
        key = tuple(wanted.values())
        if key not in self._engines:
            try:
                settings = base.model_validate(base.model_dump() | wanted)
            except ValidationError as error:
                first = error.errors()[0]
                raise InputError(f"Invalid {first['loc'][0]}: {first['msg']}.") from None
            limiter = self._limiters.get(settings)
            self._engines[key] = Engine(
                settings=settings, limiter=limiter, history=self.history, **self.options
            )
        return self._engines[key]

    async def upstream_models(self) -> list[str]:
        """The upstream endpoint's models (empty when it will not say), asked once."""
        if self._models is None:
            from llamaberry.engine import Engine

            engine = next(iter(self._engines.values()), None)
            try:
                if engine is None:
                    async with Engine(settings=self.settings, history=False) as probe:
                        self._models = await probe.models()
                else:
                    self._models = await engine.models()
            except LlamaberryError as error:
                log.warning("llamaberry serve: upstream models not listed: %s", error)
                return []
        return self._models

    async def aclose(self) -> None:
        """Close every engine."""
        for engine in self._engines.values():
            await engine.aclose()
        self._engines.clear()
