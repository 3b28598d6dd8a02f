"""Pure functions from a run's events to what the web page shows.

`RunView` folds the engine's events into plain data; its methods render that data as Chatbot
messages (one collapsible section per call) and Markdown. Nothing here imports gradio or does
I/O, so every rule about what a person sees is tested without a browser.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from llamaberry.errors import format_duration
from llamaberry.events import (
    CallFinished,
    CallNote,
    CallStarted,
    RunFinished,
    RunStarted,
    TextDelta,
    TextReset,
    ThinkingDelta,
)
from llamaberry.redact import redact
from llamaberry.results import (
    FinalAnswer,
    Run,
    Step,
    Synthesis,
    Turn,
    Usage,
    call_title,
    cut_off_line,
)
from ui.sanitize import safe_markdown

# A section with no text yet still needs a body, or the Chatbot draws nothing.
WAITING = "…"
THINKING = "*thinking…*"


@dataclass
class CallView:
    """One model call as the page shows it."""

    kind: str
    index: int
    text: str = ""
    state: str = "running"  # running | done | stopped | failed
    seconds: float | None = None
    tokens: int | None = None
    step_title: str | None = None
    retry: str | None = None
    truncated: bool = False
    cut_off_by: str | None = None
    # What the engine did to this call (condensed to fit the context window, a smaller budget,
    # stopped in a loop), one line each.
    notes: list[str] = field(default_factory=list)
    thinking: str = ""  # the model's own thinking, shown folded apart from the reply

    @property
    def title(self) -> str:
        """'Turn 2', 'Synthesis', 'Step 3: Check the units', 'Answer'."""
        base = call_title(self.kind, self.index)
        if self.step_title:
            base = f"{base}: {self.step_title}"
        if self.state == "stopped":
            base += " (stopped)"
        elif self.state == "failed":
            base += " (failed)"
        return base

    def message(self) -> dict[str, Any]:
        """This call as a Chatbot message with a collapsible section."""
        metadata: dict[str, Any] = {
            "title": self.title,
            "status": "pending" if self.state == "running" else "done",
        }
        if self.seconds is not None:
            metadata["duration"] = round(self.seconds, 2)
        notes = []
        if self.tokens is not None:
            notes.append(f"{self.tokens:,} tokens")
        if self.truncated:
            notes.append(cut_off_line(self.cut_off_by))
        notes.extend(self.notes)
        if self.retry and self.state == "running":
            notes.append(f"retrying: {self.retry}")
        if notes:
            metadata["log"] = " · ".join(notes)
        body = self.text
        if not body:
            body = THINKING if self.state == "running" else WAITING
        metadata["title"] = shown(metadata["title"])
        if "log" in metadata:
            metadata["log"] = shown(metadata["log"])
        return {"role": "assistant", "content": shown(body), "metadata": metadata}

    def thinking_message(self) -> dict[str, Any] | None:
        """The model's own thinking for this call as a collapsible section of its own."""
        if not self.thinking:
            return None
        still = self.state == "running" and not self.text
        metadata = {
            "title": shown(f"Thinking · {self.title}"),
            "status": "pending" if still else "done",
        }
        return {"role": "assistant", "content": shown(self.thinking), "metadata": metadata}


@dataclass
class RunView:
    """Everything the page knows about one run, built from its events in order."""

    mode: str = ""
    model: str = ""
    state: str = "idle"  # idle | running | ok | failed | cancelled
    calls: list[CallView] = field(default_factory=list)
    answer: str | None = None
    error: str | None = None
    run: Run | None = None

    # -- folding events ----------------------------------------------------------------------

    def apply(self, event: object) -> RunView:
        """Fold one engine event into the view and return the view."""
        if isinstance(event, RunStarted):
            self.mode, self.model, self.state = event.mode, event.model, "running"
        elif isinstance(event, CallStarted):
            self.calls.append(CallView(event.kind, event.index))
        elif isinstance(event, TextDelta):
            call = self._call(event.kind, event.index)
            # A step's raw JSON is shown parsed when it finishes, not as it arrives.
            if event.kind != "step":
                call.text += event.text
            call.retry = None
        elif isinstance(event, ThinkingDelta):
            self._call(event.kind, event.index).thinking += event.text
        elif isinstance(event, TextReset):
            call = self._call(event.kind, event.index)
            call.text = ""
            call.thinking = ""
            call.retry = event.reason
        elif isinstance(event, CallNote):
            self._call(event.kind, event.index).notes.append(event.message)
        elif isinstance(event, CallFinished):
            self._finish_call(event)
        elif isinstance(event, RunFinished):
            self._finish_run(event.run)
        return self

    def fail(self, message: str) -> RunView:
        """Record an error that stopped the run before (or outside) its event stream."""
        self.state = "failed"
        self.error = message
        for call in self.calls:
            if call.state == "running":
                call.state = "failed"
        return self

    def stop(self) -> RunView:
        """Mark the run as stopped by the person: what finished stays, the rest is marked."""
        if self.state in ("running", "idle"):
            self.state = "cancelled"
        for call in self.calls:
            if call.state == "running":
                call.state = "stopped"
        return self

    def _call(self, kind: str, index: int) -> CallView:
        for call in reversed(self.calls):
            if call.kind == kind and call.index == index:
                return call
        # Steps may announce a call only once it succeeds; show it from its first sign of life.
        call = CallView(kind, index)
        self.calls.append(call)
        return call

    def _finish_call(self, event: CallFinished) -> None:
        call = self._call(event.kind, event.index)
        result = event.result
        call.state = "done"
        call.seconds = result.seconds
        call.tokens = result.usage.total_tokens
        call.retry = None
        call.truncated = bool(getattr(result, "truncated", False))
        call.cut_off_by = getattr(result, "cut_off_by", None)
        if isinstance(result, Step):
            call.step_title = result.title
            call.text = result.content
        elif isinstance(result, Turn | Synthesis | FinalAnswer):
            call.text = result.content
        if isinstance(result, Synthesis):
            self.answer = result.answer
        elif isinstance(result, FinalAnswer):
            self.answer = result.content.strip()
        elif isinstance(result, Turn) and event.kind == "answer":
            self.answer = result.answer

    def _finish_run(self, run: Run) -> None:
        self.run = run
        self.mode, self.model = run.mode, run.model
        if run.answer:
            self.answer = run.answer
        if run.status == "cancelled":
            self.stop()
        elif run.status == "failed":
            self.fail(run.error or "The run failed.")
        else:
            self.state = run.status

    # -- what the page shows -----------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once the run has ended, however it ended."""
        return self.state in ("ok", "failed", "cancelled")

    @property
    def usage(self) -> Usage:
        """Tokens spent so far (the whole run's once it has finished)."""
        if self.run is not None:
            return self.run.usage
        return Usage(total_tokens=sum(c.tokens or 0 for c in self.calls))

    @property
    def seconds(self) -> float | None:
        """Wall time of the finished run."""
        return self.run.seconds if self.run is not None else None

    @property
    def thinking_seconds(self) -> float:
        """Time spent on reasoning steps (the steps mode's 'total thinking time')."""
        return sum(c.seconds or 0.0 for c in self.calls if c.kind == "step")

    def messages(self) -> list[dict[str, Any]]:
        """The calls as Chatbot messages, in the order they ran, each call's own thinking (if
        the model sent any) folded just before it."""
        messages = []
        for call in self.calls:
            thinking = call.thinking_message()
            if thinking is not None:
                messages.append(thinking)
            messages.append(call.message())
        return messages

    def answer_markdown(self) -> str:
        """The final answer, set apart; empty until there is one."""
        if not self.answer:
            return ""
        return f"### Answer\n\n{shown(self.answer)}"

    def error_markdown(self) -> str:
        """One readable line when the run failed; empty otherwise."""
        return f"**Error:** {shown(self.error)}" if self.state == "failed" and self.error else ""

    def summary_markdown(self) -> str:
        """One line on where the run stands: progress while it runs, its cost when done."""
        if self.state == "idle":
            return ""
        if self.state == "running":
            current = next((c for c in reversed(self.calls) if c.state == "running"), None)
            doing = f"{shown(current.title)} running" if current else "starting"
            return f"*{doing}…* · {self.usage.total_tokens:,} tokens so far"
        parts = [{"ok": "Done", "failed": "Failed", "cancelled": "Stopped"}[self.state]]
        if self.mode == "steps":
            steps = sum(1 for c in self.calls if c.kind == "step" and c.state == "done")
            parts.append(
                f"{steps} steps · total thinking time {format_duration(self.thinking_seconds)}"
            )
        if self.seconds is not None:
            parts.append(format_duration(self.seconds))
        parts.append(_tokens(self.usage))
        return " · ".join(parts)

    def live_markdown(self) -> str:
        """For a compare column: the answer when known, else the call now streaming."""
        if self.answer:
            return shown(self.answer)
        current = next((c for c in reversed(self.calls) if c.state == "running"), None)
        if current is None:
            return ""
        title = shown(current.title)
        return f"*{title}…*\n\n{shown(current.text)}" if current.text else f"*{title}…*"

    def stats_markdown(self) -> str:
        """For a compare column: seconds and tokens, or the error, or progress."""
        if self.state == "failed":
            return self.error_markdown()
        return self.summary_markdown()


def shown(text: str) -> str:
    """Model or error text made fit for the page: the one filter every shown string passes.

    No key reaches the page, and nothing in the text can make the page load, submit or run
    anything (see `ui.sanitize`).
    """
    return safe_markdown(redact(text))


def fold(events: Iterable[object], view: RunView | None = None) -> RunView:
    """Fold a sequence of events into a view (a new one unless `view` is given)."""
    view = view or RunView()
    for event in events:
        view.apply(event)
    return view


def _tokens(usage: Usage) -> str:
    if usage.prompt_tokens or usage.completion_tokens:
        thinking = f", {usage.reasoning_tokens:,} thinking" if usage.reasoning_tokens else ""
        return (
            f"{usage.total_tokens:,} tokens ({usage.prompt_tokens:,} in, "
            f"{usage.completion_tokens:,} out{thinking})"
        )
    return f"{usage.total_tokens:,} tokens"
