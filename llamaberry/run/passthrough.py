"""What a caller asks of the upstream model beside its question, carried by a run to its calls.

A client of `serve` (or of the engine) may ask for more than an answer: a reply in a JSON
format (`response_format`), tool calls (`tools`, `tool_choice`), stop sequences, a seed, its
own sampling. A mode thinks as it always does; what the caller asked for goes with the calls
as follows:

- `top_p`, the penalties, `logit_bias`, `user` and `seed` go with every call (the seed moved
  on by the call's index, so a vote's samples or the drafts still differ from each other);
- `response_format`, `tools`, `tool_choice`, `parallel_tool_calls`, `stop` and `logprobs` go
  with the run's final call only (single's one call, refine's and drafts' synthesis, steps'
  final answer; vote and reflect, whose answer is not one call's reply, make one more call
  that gives the answer they reached in the asked form). That call is told to answer in
  the asked form; its reply is the answer as the caller gets it.
- `system`, the caller's own system message, stays a system message in every call: ahead of
  the mode's own instructions in its system message, or as one where the call has none;
- `messages`, the conversation exactly as the caller sent it (system messages, image parts,
  tool calls and results), goes out in place of the prompt of a call that has no scaffold of
  its own (single's), so that mode passes everything through untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llamaberry.core.results import Message

# Request fields that go with every call of a run.
EVERY_CALL = ("top_p", "presence_penalty", "frequency_penalty", "logit_bias", "user", "seed")
# Request fields that go with the run's final call only.
FINAL_CALL = (
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "stop",
    "logprobs",
    "top_logprobs",
)
FIELDS = EVERY_CALL + FINAL_CALL


@dataclass(frozen=True)
class Passthrough:
    """The request fields a run passes on to its calls (see the module's docstring)."""

    every_call: Mapping[str, Any] = field(default_factory=dict)
    final_call: Mapping[str, Any] = field(default_factory=dict)
    # The conversation as sent (chat-completions messages), for a call with no scaffold.
    messages: list[dict[str, Any]] | None = None
    # The caller's system message (its text), kept a system message in every call.
    system: str | None = None

    @classmethod
    def of(
        cls,
        fields: Mapping[str, Any],
        messages: list[dict[str, Any]] | None = None,
        system: str | None = None,
    ) -> Passthrough:
        """Split a request's `fields` (any others are ignored; None means not given)."""
        given = {k: v for k, v in fields.items() if v is not None}
        return cls(
            every_call={k: v for k, v in given.items() if k in EVERY_CALL},
            final_call={k: v for k, v in given.items() if k in FINAL_CALL},
            messages=messages,
            system=system,
        )

    @property
    def shaped(self) -> bool:
        """Whether the final reply is asked to take a form of its own: JSON, or tool calls."""
        fmt = self.final_call.get("response_format")
        json_reply = isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema")
        return json_reply or bool(self.final_call.get("tools"))

    def fields(self, index: int, *, final: bool) -> dict[str, Any]:
        """The request fields of call `index` (its first is 1), the final one's or another's."""
        sent = dict(self.every_call)
        seed = sent.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool) and index > 1:
            sent["seed"] = seed + index - 1
        if final:
            sent.update(self.final_call)
        return sent

    def apply(
        self,
        index: int,
        messages: list[Message],
        condensed: Iterable[list[Message]],
        *,
        final: bool,
        as_sent: bool,
    ) -> tuple[dict[str, Any], list[Message], Iterable[list[Message]]]:
        """A call's request fields, and its messages (and their condensed forms) with what a
        final call is told when its reply has a form to take. With `as_sent`, a final call
        sends the caller's conversation (when there is one) in place of its messages."""
        extra = self.fields(index, final=final)
        if final and as_sent and self.messages:
            extra["messages"] = self.messages
            return extra, messages, condensed
        if final and self.shaped:
            messages = self._told(messages)
            condensed = (self._told(form) for form in condensed)
        if self.system:
            messages = self._with_system(messages)
            condensed = (self._with_system(form) for form in condensed)
        return extra, messages, condensed

    def _told(self, messages: list[Message]) -> list[Message]:
        """`messages` with the instruction at the end of the last user message (a message of
        its own would put two user turns in a row, which some chat templates refuse)."""
        told = self.instruction()
        if messages and messages[-1].role == "user":
            last = messages[-1]
            return [*messages[:-1], Message(role="user", content=f"{last.content}\n\n{told}")]
        return [*messages, Message(role="user", content=told)]

    def _with_system(self, messages: list[Message]) -> list[Message]:
        """`messages` with the caller's system message ahead of the mode's own instructions."""
        assert self.system is not None
        if messages and messages[0].role == "system":
            merged = f"{self.system}\n\n{messages[0].content}"
            return [Message(role="system", content=merged), *messages[1:]]
        return [Message(role="system", content=self.system), *messages]

    def instruction(self) -> str:
        """What a final call is told, after its own prompt, when its reply has a form to take."""
        lines = []
        fmt = self.final_call.get("response_format")
        if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema"):
            lines.append(
                "Write your final reply as the JSON this request asks for, and nothing else: "
                "that JSON takes the place of any other layout described above."
            )
        if self.final_call.get("tools"):
            lines.append(
                "Tools are available for this reply. If the answer needs one of them (to look "
                "something up or to act), call it now rather than writing the answer; "
                "otherwise answer as asked above."
            )
        return "\n".join(lines)


def closing_messages(question: str, answer: str) -> list[tuple[str, str]]:
    """The call that gives an answer a mode reached without a final call (vote's count,
    reflect's chain) in the form the request asks for."""
    body = (
        f"<question>\n{question}\n</question>\n\n<answer>\n{answer.strip()}\n</answer>\n\n"
        "The answer above was worked out for this question. Give it as your reply now."
    )
    return [("user", body)]
