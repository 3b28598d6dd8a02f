"""Asking for a JSON reply: the `response_format` a request carries, and the schema cut down to
what a provider's strict mode takes.

A mode asks for a schema (the steps mode's step) and the providers send it, so it lives below
both. Whether the endpoint takes a schema at all is learned from its first refusal (see
`providers.errors.refuses_schema` and `SDKClient.stream` in `providers.sdk`, which then asks for
any JSON object instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pydantic import BaseModel

# How a reply was asked to be JSON: of a given schema, or any JSON object.
ResponseFormat = Literal["json_schema", "json_object"]

# Keywords every strict structured-output implementation takes (OpenAI's and Groq's strict
# mode refuse others, such as minLength); a schema is cut down to these before it is sent.
_STRICT_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "enum", "items"}
)


# What a server that compiles the whole schema into a grammar (llama.cpp) also enforces: without
# minLength a small model can close a step with an empty "content".
_GRAMMAR_KEYWORDS = _STRICT_KEYWORDS | {"minLength", "maxLength", "minItems", "maxItems"}


@dataclass(frozen=True)
class JSONSchema:
    """The shape a reply must have, sent as `response_format={"type": "json_schema", ...}`.

    `schema` keeps to what strict mode takes everywhere; `grammar` adds the length limits, for
    a server known to enforce them (llama.cpp, the `local` provider).
    """

    name: str
    schema: dict[str, Any]
    grammar: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model: type[BaseModel], name: str) -> JSONSchema:
        """The strict-mode schema of a pydantic model: every key required, no other keys."""
        full = model.model_json_schema()
        return cls(name, _strict(full, _STRICT_KEYWORDS), _strict(full, _GRAMMAR_KEYWORDS))

    def response_format(
        self, *, lengths: bool = False, budget: int | None = None
    ) -> dict[str, Any]:
        """The `response_format` request parameter (with the length limits if `lengths`,
        lowered where needed so the whole object fits a reply of `budget` tokens)."""
        schema = self.grammar if lengths and self.grammar else self.schema
        if lengths and budget:
            schema = _fit_lengths(schema, budget)
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "strict": True, "schema": schema},
        }


# Tokens a reply's keys, quotes and spacing take besides its string values.
_OBJECT_OVERHEAD = 48


def _fit_lengths(schema: dict[str, Any], budget: int) -> dict[str, Any]:
    """`schema` with its top-level string `maxLength`s scaled down together so that, at one
    character a token (digits and symbols, the densest text a small model runs away with),
    the whole object still closes within `budget` tokens: the grammar ends a runaway field,
    not the budget, which would cut the JSON off."""
    properties = schema.get("properties") or {}
    limits = {
        key: value["maxLength"]
        for key, value in properties.items()
        if isinstance(value, dict) and isinstance(value.get("maxLength"), int)
    }
    room = max(budget - _OBJECT_OVERHEAD, len(limits))
    total = sum(limits.values())
    if not limits or total <= room:
        return schema
    fitted = dict(properties)
    for key, limit in limits.items():
        low = properties[key].get("minLength", 0)
        fitted[key] = {**properties[key], "maxLength": max(limit * room // total, low, 1)}
    return {**schema, "properties": fitted}


def _strict(schema: dict[str, Any], keywords: frozenset[str]) -> dict[str, Any]:
    out = {key: value for key, value in schema.items() if key in keywords}
    if "properties" in out:
        out["properties"] = {
            key: _strict(value, keywords) for key, value in out["properties"].items()
        }
        # Strict mode wants every property listed as required and nothing else allowed.
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"], keywords)
    return out
