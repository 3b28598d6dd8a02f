"""Pure functions from a run's events to what the web page shows.

`RunView` folds the engine's events into plain data; its methods render that data as Chatbot
messages (one collapsible section per call) and Markdown. Every mode gets that generic view
(the answer card, then one section per call); what a mode shows beyond it (vote's tally, the
"Turn 2 of 3" of refine) is its entry in `MODE_VIEWS`, the one table here that names modes.
Nothing here imports gradio or does I/O, so every rule about what a person sees is tested
without a browser.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llamaberry.core.errors import format_duration
from llamaberry.core.events import (
    CallFinished,
    CallNote,
    CallStarted,
    RunFinished,
    RunStarted,
    TextDelta,
    TextReset,
    ThinkingDelta,
)
from llamaberry.core.prices import run_cost_text
from llamaberry.core.providers import DEFAULT
from llamaberry.core.redact import redact
from llamaberry.core.results import (
    CallResult,
    FinalAnswer,
    Run,
    Synthesis,
    Turn,
    Usage,
    call_title,
    cut_off_line,
)
from llamaberry.core.settings import on_demo_model

from .sanitize import safe_markdown

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
    # A title the call's result gives itself (a step's), shown after 'Step 3: '.
    own_title: str | None = None
    retry: str | None = None
    truncated: bool = False
    cut_off_by: str | None = None
    # What the engine did to this call (condensed to fit the context window, a smaller budget,
    # stopped in a loop), one line each.
    notes: list[str] = field(default_factory=list)
    thinking: str = ""  # the model's own thinking, shown folded apart from the reply
    # Text pieces streamed so far: a running count of the reply's tokens before usage arrives.
    streamed: int = 0
    # The parsed answer of a finished turn (the fallback when the synthesis misses its format).
    answer: str | None = None
    structured: bool = False
    # The parsed result once the call finished (a mode's view may show more of it).
    result: CallResult | None = None
    # How the mode this call belongs to draws it (its title, whether it folds), and the
    # run it is part of (a title may depend on the other calls: a vote counts them).
    look: ModeView | None = None
    run_view: RunView | None = field(default=None, repr=False, compare=False)

    @property
    def title(self) -> str:
        """'Turn 2', 'Synthesis', 'Step 3: Check the units', 'Sample 2 · answer 42'."""
        base = call_title(self.kind, self.index)
        own = _own_title(self.own_title, self.index)
        if own:
            base = f"{base}: {own}"
        titled = self.look.title if self.look else None
        named = titled(self.run_view, self) if titled and self.run_view else None
        if named:
            base = named
        elif self.result is not None and self.result.badge():
            # A few words a result wants beside its title (a self-scored reward).
            base = f"{base} · {self.result.badge()}"
        if self.state == "stopped":
            base += " (stopped)"
        elif self.state == "failed":
            base += " (failed)"
        return base

    def message(self) -> dict[str, Any]:
        """This call as a Chatbot message with a collapsible section."""
        metadata: dict[str, Any] = {"title": self.title}
        if self.state == "running":
            metadata["status"] = "pending"
        elif not (self.look and self.kind in self.look.open_kinds):
            # Turns and samples are long: they fold once finished. A mode's short calls
            # (steps, as g1 shows them) stay open; a section without a status is drawn open
            # with no spinner.
            metadata["status"] = "done"
        if self.seconds is not None:
            # A call of a few ms still took time: never shown as 0.0s.
            metadata["duration"] = max(round(self.seconds, 2), 0.01 if self.seconds > 0 else 0.0)
        notes = []
        if self.tokens:
            # None or 0: not counted for this call apart (a reflect step is part of one
            # streamed call, which carries the tokens).
            notes.append(f"{self.tokens:,} tokens")
        if self.truncated:
            notes.append(cut_off_line(self.cut_off_by))
        notes.extend(self.notes)
        if self.retry and self.state == "running":
            notes.append(f"retrying: {self.retry}")
        if notes:
            # The engine's lines name the terminal's flags; the page has its own controls.
            metadata["log"] = page_words(" · ".join(notes))
        body = self.text
        if not body:
            body = THINKING if self.state == "running" else WAITING
        remark = self.result.remark() if self.result is not None else ""
        if remark:
            # A line a result wants under its content (a reflection on it), set apart.
            named = self.look.remark if self.look and self.look.remark else ""
            lines = remark.splitlines()
            if named:
                lines[0] = f"**{named}:** {lines[0]}"
            body += "\n\n" + "\n".join(f"> {line}" for line in lines)
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
    # The synthesis's comprehensive answer, shown under the concise one.
    detail: str | None = None
    # Where the answer came from when it is not the run's own: "Turn 3" when the synthesis
    # missed its format, or "partial" when the run failed after a good turn.
    source: str | None = None
    error: str | None = None
    run: Run | None = None
    # How many of the mode's counted calls were asked for (refine's turns, vote's samples),
    # so progress can say "Turn 2 of 3" or "2 of 5 samples done".
    planned: int | None = None
    started: float | None = None
    ended: float | None = None
    # What the engine did to the run as a whole (a step budget that stopped it, an answer
    # taken from elsewhere), one line each: notes about no call the page shows.
    notes: list[str] = field(default_factory=list)
    # Why the answer is not the synthesis's own when it wrote our prompt back.
    echo_note: str = ""

    # -- folding events ----------------------------------------------------------------------

    @classmethod
    def from_run(cls, run: Run) -> RunView:
        """The view of a saved run, the same a live one ends with (History reopens runs so).

        Every parsed call in the run's result becomes a section, in the order the result
        gives them (turns then the synthesis, samples by number...), under the kind and
        number each call says it has.
        """
        view = cls(mode=run.mode, model=run.model, state="running")
        look = view.look
        for result in run.result.call_results():
            kind, index = result.kind, result.index
            view.calls.append(
                CallView(kind, index, thinking=result.thinking or "", look=look, run_view=view)
            )
            view._finish_call(CallFinished(kind=kind, index=index, result=result))
        # The run's notes about calls it does not show as sections (a step budget that
        # stopped the chain); notes about a shown call were drawn in its section live.
        shown_calls = {(c.kind, c.index) for c in view.calls}
        view.notes = [
            line
            for line in run.notes
            if not any(
                f"{call_title(k, i)} " in line or line.startswith(call_title(k, i))
                for k, i in shown_calls
            )
        ]
        view._finish_run(run)
        return view

    @property
    def look(self) -> ModeView:
        """How this run's mode is drawn beyond the generic view."""
        return mode_view(self.mode)

    def apply(self, event: object) -> RunView:
        """Fold one engine event into the view and return the view."""
        if isinstance(event, RunStarted):
            self.mode, self.model, self.state = event.mode, event.model, "running"
            self.begin()
        elif isinstance(event, CallStarted):
            self.calls.append(CallView(event.kind, event.index, look=self.look, run_view=self))
        elif isinstance(event, TextDelta):
            call = self._call(event.kind, event.index)
            # A step's raw JSON is shown parsed when it finishes, not as it arrives.
            if event.kind != "step":
                call.text += event.text
            call.streamed += 1
            call.retry = None
        elif isinstance(event, ThinkingDelta):
            self._call(event.kind, event.index).thinking += event.text
        elif isinstance(event, TextReset):
            call = self._call(event.kind, event.index)
            call.text = ""
            call.thinking = ""
            call.streamed = 0
            call.retry = event.reason
        elif isinstance(event, CallNote):
            known = self._known(event.kind, event.index)
            if known is None:
                self.notes.append(event.message)
            else:
                known.notes.append(event.message)
        elif isinstance(event, CallFinished):
            self._finish_call(event)
        elif isinstance(event, RunFinished):
            self._finish_run(event.run)
        return self

    def begin(self) -> RunView:
        """Mark the run as running from now (the clock for its elapsed time starts)."""
        self.state = "running"
        if self.started is None:
            self.started = time.monotonic()
        return self

    def fail(self, message: str) -> RunView:
        """Record an error that stopped the run before (or outside) its event stream."""
        self.state = "failed"
        self._end()
        self.error = message
        for call in self.calls:
            if call.state == "running":
                call.state = "failed"
        return self

    def stop(self) -> RunView:
        """Mark the run as stopped by the person: what finished stays, the rest is marked."""
        if self.state in ("running", "idle"):
            self.state = "cancelled"
            self._end()
        for call in self.calls:
            if call.state == "running":
                call.state = "stopped"
        return self

    def _end(self) -> None:
        if self.ended is None:
            self.ended = time.monotonic()

    def _known(self, kind: str, index: int) -> CallView | None:
        return next((c for c in reversed(self.calls) if c.kind == kind and c.index == index), None)

    def _call(self, kind: str, index: int) -> CallView:
        for call in reversed(self.calls):
            if call.kind == kind and call.index == index:
                return call
        # Steps may announce a call only once it succeeds; show it from its first sign of life.
        call = CallView(kind, index, look=self.look, run_view=self)
        self.calls.append(call)
        return call

    def _finish_call(self, event: CallFinished) -> None:
        call = self._call(event.kind, event.index)
        result = event.result
        call.state = "done"
        call.result = result
        call.seconds = result.seconds
        call.tokens = result.usage.total_tokens
        call.retry = None
        call.truncated = bool(getattr(result, "truncated", False))
        call.cut_off_by = getattr(result, "cut_off_by", None)
        # Any mode's parsed call: its text as parsed (a step's content, not its raw JSON).
        call.text = result.content
        own = getattr(result, "title", None)
        call.own_title = own if isinstance(own, str) else None
        if isinstance(result, Turn):
            call.answer, call.structured = result.answer, result.structured
        if isinstance(result, Synthesis):
            self._take_synthesis(result)
        elif isinstance(result, FinalAnswer):
            self.answer = result.content.strip()
        elif isinstance(result, Turn) and result.kind == "answer":
            self.answer = result.answer

    def _take_synthesis(self, synthesis: Synthesis) -> None:
        """The concise answer as headline and the comprehensive one under it; when the model
        missed the format, the last structured turn's answer, labelled, instead of raw text."""
        concise = (synthesis.concise_answer or "").strip()
        comprehensive = (synthesis.comprehensive_answer or "").strip()
        if concise or comprehensive:
            self.answer = concise or comprehensive
            self.detail = comprehensive if concise and comprehensive != concise else None
            self.source = None
            return
        turn = next(
            (c for c in reversed(self.calls) if c.kind == "turn" and c.structured and c.answer),
            None,
        )
        if turn is not None:
            self.answer, self.detail, self.source = (
                turn.answer,
                None,
                call_title("turn", turn.index),
            )
        else:
            self.answer, self.detail, self.source = synthesis.answer, None, "unformatted"

    def _finish_run(self, run: Run) -> None:
        self.run = run
        self.mode, self.model = run.mode, run.model
        self._end()
        echo = next(
            (n for n in run.notes if n.startswith("The synthesis") and "the prompt" in n), None
        )
        if echo is not None and self.source == "unformatted" and run.answer:
            # The synthesis wrote our prompt back: the run's answer is what it had instead.
            self.answer, self.source, self.echo_note = run.answer, "echo", echo.rstrip(".")
        if run.partial and run.answer:
            self.answer, self.detail, self.source = run.answer, None, "partial"
        elif run.answer and self.source is None and not self.detail:
            self.answer = run.answer
        if run.status == "cancelled":
            self.stop()
        elif run.status == "failed":
            self.fail(run.error or "The run failed.")
        else:
            self.state = run.status
            for call in self.calls:
                if call.state == "running":  # a reflect chain's text, never a call of its own
                    call.state = "done"

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
    def elapsed(self) -> float | None:
        """Seconds since the run started (until it ended), by the page's own clock."""
        if self.started is None:
            return None
        return (self.ended or time.monotonic()) - self.started

    @property
    def thinking_seconds(self) -> float:
        """Time spent on reasoning steps ('total thinking time' of a chain of steps)."""
        return sum(c.seconds or 0.0 for c in self.calls if c.kind == "step")

    @property
    def tokens_so_far(self) -> int:
        """Tokens of finished calls plus the pieces streamed by the running ones."""
        return sum(c.tokens if c.tokens is not None else c.streamed for c in self.calls)

    def messages(self) -> list[dict[str, Any]]:
        """The calls as Chatbot messages, in the order they ran, each call's own thinking (if
        the model sent any) folded just before it.

        The closing answer call is left out once the answer card shows it, so the answer is
        not on the page twice.
        """
        messages = []
        for call in self.calls:
            if call.kind == "answer" and call.state == "done" and self.answer:
                continue
            thinking = call.thinking_message()
            if thinking is not None:
                messages.append(thinking)
            messages.append(call.message())
        return messages

    def answer_markdown(self) -> str:
        """The answer card's text: the concise answer as headline, the comprehensive one under.

        Only the answer itself (what the copy button copies); where it came from and what it
        cost are in `summary_markdown`, beside it.
        """
        if not self.answer:
            return ""
        answer = shown(self.answer.strip())
        if not self.detail:
            # A mode whose answer is short by design (vote's winner) heads the card with it.
            body = f"### {answer}" if self.look.headline and _headline(answer) else answer
        elif _headline(answer):
            body = f"### {answer}\n\n{shown(self.detail)}"
        else:
            body = f"{answer}\n\n{shown(self.detail)}"
        return body + self._card_footer()

    def _card_footer(self) -> str:
        """Under the answer, on the card: where the answer came from when it is not the run's
        own, and that the embedded demo model gave it."""
        lines = [self.answer_label()] if self.source else []
        if self.run is not None and on_demo_model(self.run.provider, self.run.model):
            lines.append(DEMO_LINE)
        if not lines:
            return ""
        return "\n\n---\n\n" + "\n\n".join(f"_{line}_" for line in lines)

    def answer_label(self) -> str:
        """What the answer card holds: 'Answer', or a label saying why it is not the run's own."""
        if self.source == "partial":
            return (
                "**Partial answer**: the run failed before it finished; this is its last good turn."
            )
        if self.source == "unformatted":
            return "**Answer** (the model did not follow the answer format; its reply as written)"
        if self.source == "echo":
            return f"**Answer** ({self.echo_note})"
        if self.source:
            return (
                f"**Answer from {self.source}**: the synthesis missed the answer format, "
                "so this is the last turn's answer."
            )
        return "**Answer**"

    def error_markdown(self) -> str:
        """One readable line when the run failed; empty otherwise."""
        if self.state == "failed" and self.error:
            return f"**Error:** {shown(page_words(self.error))}"
        return ""

    def progress(self) -> str:
        """Where a running run stands: 'Turn 2 of 3 · 12s · 340 tokens so far'."""
        running = [c for c in self.calls if c.state == "running"]
        current = running[-1] if running else None
        counted = self.look.counted[1] if self.look.counted else None
        if current is None:
            doing = "Starting"
        elif sum(1 for c in running if c.kind == current.kind) > 1:
            # Calls made at once (vote's samples, drafts' drafts): how many are back.
            done = sum(1 for c in self.calls if c.kind == current.kind and c.state == "done")
            kind = sum(1 for c in self.calls if c.kind == current.kind)
            total = self.planned if current.kind == counted and self.planned else kind
            doing = f"{done} of {total} {current.kind}s done"
        elif current.kind == counted and self.planned:
            doing = f"{call_title(current.kind, current.index)} of {self.planned}"
        else:
            doing = call_title(current.kind, current.index)
        if current is not None and current.retry:
            doing += " (retrying)"
        parts = [f"*{shown(doing)}…*"]
        if self.elapsed is not None:
            parts.append(_clock(self.elapsed))
        parts.append(f"{self.tokens_so_far:,} tokens so far")
        return " · ".join(parts)

    def summary_markdown(self) -> str:
        """Beside the answer: progress while it runs, then how it ended and what it cost."""
        if self.state == "idle" or (self.state == "failed" and self.started is None):
            # Not begun (or refused before it began: the error line says why).
            return ""
        if self.state == "running":
            return self.progress()
        parts = [{"ok": "Done", "failed": "Failed", "cancelled": "Stopped"}[self.state]]
        if self.look.summary is not None:
            parts += self.look.summary(self)
        elif self.look.counted:
            kind = self.look.counted[1]
            done = sum(1 for c in self.calls if c.kind == kind and c.state == "done")
            if done:
                parts.append(f"{done} {kind}{'s' if done != 1 else ''}")
        seconds = self.seconds if self.seconds is not None else self.elapsed
        if seconds is not None:
            parts.append(f"{format_duration(seconds)} in all")
        parts.append(_tokens(self.usage if self.run else Usage(total_tokens=self.tokens_so_far)))
        if self.run is not None:
            parts.append(run_cost_text(self.run))
        return " · ".join(parts)  # where the answer came from is on the card itself

    def details_markdown(self) -> str:
        """What the mode shows under the answer card beyond the generic view (vote's tally)."""
        if self.look.details is not None:
            return self.look.details(self)
        return notes_markdown(self)

    def live_markdown(self) -> str:
        """For a compare card: the answer when known, else the call now streaming, else the
        last finished turn's answer (what a stopped or failed run still has)."""
        if self.answer:
            return self.answer_markdown()
        current = next((c for c in reversed(self.calls) if c.state == "running"), None)
        if current is not None:
            title = shown(current.title)
            return f"*{title}…*\n\n{shown(current.text)}" if current.text else f"*{title}…*"
        last = next((c for c in reversed(self.calls) if c.state == "done" and c.text), None)
        if last is None:
            return ""
        kept = last.answer if last.answer else last.text
        return f"*From {shown(last.title)}, the last finished call:*\n\n{shown(kept)}"

    def stats_markdown(self) -> str:
        """For a compare card: seconds and tokens, or the error, or progress."""
        if self.state == "failed":
            return self.error_markdown()
        return self.summary_markdown()

    def reasoning_markdown(self) -> str:
        """Every call's text, one section each: a compare card's reasoning, one click away."""
        parts = []
        for call in self.calls:
            if call.kind == "answer" and self.answer:
                continue
            parts.append(f"**{shown(call.title)}**\n\n{shown(call.text) or WAITING}")
        details = self.details_markdown()
        return "\n\n---\n\n".join([details, *parts] if details else parts)


DEMO_LINE = (
    f"A 135M demo model answered; paste a {DEFAULT.title} key under Settings (or set "
    f"{DEFAULT.key_variable} and restart) for real answers."
)

# Errors written for the terminal, as the page says them.
_PAGE_WORDS = (
    ("Choose one with --model or LLAMABERRY_MODEL.", "Pick a model in Settings."),
    ("--max-tokens", "the token budget"),
)


def page_words(message: str) -> str:
    """An error line with its terminal advice (flags, env vars) put in the page's terms."""
    for terminal, page in _PAGE_WORDS:
        message = message.replace(terminal, page)
    # A mode option's flag is an option on the mode's tab: "(--step-budget)" reads as
    # "(the Step budget option)".
    return re.sub(
        r"--([a-z][a-z-]*)",
        lambda flag: f"the {flag.group(1).replace('-', ' ').capitalize()} option",
        message,
    )


def _own_title(title: str | None, index: int) -> str | None:
    """A step's own title, without a 'Step 1' the model put there itself (no 'Step 1: Step 1')."""
    if not title:
        return None
    own = re.sub(rf"^\s*step\s*{index}\b\s*[:.\-–—]?\s*", "", title, flags=re.IGNORECASE)
    return own or None


def _headline(answer: str) -> bool:
    """True when the answer is short and plain enough to stand as a headline."""
    return (
        len(answer) <= 240
        and "\n" not in answer.strip()
        and not answer.lstrip().startswith(("#", "-", "*", ">", "|", "`", "1."))
    )


def _clock(seconds: float) -> str:
    """Elapsed time as a clock reads it: '7s', '1m 05s'."""
    whole = int(seconds)
    return f"{whole}s" if whole < 60 else f"{whole // 60}m {whole % 60:02d}s"


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
        cached = f", {usage.cached_tokens:,} cached" if usage.cached_tokens else ""
        thinking = f", {usage.reasoning_tokens:,} thinking" if usage.reasoning_tokens else ""
        return (
            f"{usage.total_tokens:,} tokens ({usage.prompt_tokens:,} in{cached}, "
            f"{usage.completion_tokens:,} out{thinking})"
        )
    return f"{usage.total_tokens:,} tokens"


def mode_name(mode: str, options: Mapping[str, Any] | None = None) -> str:
    """A mode as a person names it: 'Single answer', 'Refine · 3 turns', 'Vote · 5 samples'."""
    look = mode_view(mode)
    name = look.label or mode.replace("_", " ").capitalize()
    if look.counted and options and options.get(look.counted[0]):
        count = int(options[look.counted[0]])
        name += f" · {count} {look.counted[1]}{'s' if count != 1 else ''}"
    return name


def answer_key(answer: str) -> str:
    """What two answers must share to agree: the number they give, else their choice, else
    their final words (casefolded, emphasis and punctuation dropped)."""
    from llamaberry.core.scoring import final_segment, normalize, read_choice, read_number

    number = read_number(answer)
    if number is not None:
        return f"number:{number[0]}"
    choice = read_choice(answer)
    if choice is not None:
        return f"choice:{choice}"
    return "text:" + normalize(final_segment(answer) or answer)


def agreement(views: Iterable[RunView]) -> tuple[str, str]:
    """The badge over the compare cards and its kind ('agree', 'differ', or '' for none).

    Judged only once two or more modes have finished answers.
    """
    answers = [v.answer for v in views if v.answer and v.finished and v.source != "partial"]
    if len(answers) < 2:
        return "", ""
    if len({answer_key(a) for a in answers}) == 1:
        return f"✓ The {len(answers)} answers agree", "agree"
    return f"≠ The answers differ ({len(answers)} modes)", "differ"


# -- what each mode shows beyond the generic view --------------------------------------------


@dataclass(frozen=True)
class ModeView:
    """How one mode's run is drawn beyond the generic view (the answer card, then one section
    per call titled 'Kind N', folded once done). Every part is optional: a mode with no entry
    in `MODE_VIEWS` gets the generic view, so a new mode shows in the page unchanged."""

    # How a person names the mode ('Single answer'); else its name, capitalised.
    label: str | None = None
    # The option that sets how many calls of which kind a run makes ("turns", "turn"): the
    # compare card says 'Refine · 3 turns' and progress 'Turn 2 of 3'.
    counted: tuple[str, str] | None = None
    # The title of the sections that hold the calls.
    sections: str = "Calls"
    # Call kinds whose sections stay open once done (short ones, read as a chain).
    open_kinds: frozenset[str] = frozenset()
    # The answer is short by design (a voted answer): it heads the card.
    headline: bool = False
    # The parts of the summary line after 'Done' ('3 steps · total thinking time 1.2s').
    summary: Callable[[RunView], list[str]] | None = None
    # Markdown under the answer card (vote's tally).
    details: Callable[[RunView], str] | None = None
    # A call's own title ('Sample 2 · answer 42'), given its run; None keeps 'Kind N'.
    title: Callable[[RunView, CallView], str | None] | None = None
    # What a result's remark is, said before it ("Reflection").
    remark: str | None = None


def notes_markdown(view: RunView) -> str:
    """The run's own notes (not about any one section), one line each."""
    return "\n\n".join(f"*{shown(page_words(line))}*" for line in view.notes)


def _steps_summary(view: RunView) -> list[str]:
    steps = sum(1 for c in view.calls if c.kind == "step" and c.state == "done")
    if not steps:
        return []
    return [f"{steps} steps · total thinking time {format_duration(view.thinking_seconds)}"]


def _sample_title(view: RunView, call: CallView) -> str | None:
    if call.state != "done" or call.result is None:
        return None
    answer, key = getattr(call.result, "answer", None), getattr(call.result, "key", None)
    if not answer:
        return f"{call_title(call.kind, call.index)} · no answer it could read"
    # The tally names each answer as first written; say so where this sample wrote it
    # another way ("three", counted as 3).
    same = [
        c.result
        for c in view.calls
        if c.kind == call.kind and c.result is not None and getattr(c.result, "key", None) == key
    ]
    first = min(same, key=lambda r: getattr(r, "finished", 0), default=call.result)
    counted = getattr(first, "answer", answer)
    said = f"answer {answer}" + (f" (counted as {counted})" if counted != answer else "")
    return f"{call_title(call.kind, call.index)} · {said}"


def _confidence(count: int, readable: int) -> str:
    """The agreement ratio in words a person can act on."""
    if readable == 1:
        return "only one readable answer, so no agreement to measure"
    if count == readable:
        return f"all {readable} agree: high confidence"
    ratio = count / readable
    if ratio >= 0.8:
        return "high confidence"
    if ratio > 0.5:
        return "a majority, not a consensus"
    return "no majority: low confidence, the samples disagree"


def vote_details(view: RunView) -> str:
    """The tally of a vote run: votes per answer, the winner, the agreement and any tie."""
    from llamaberry.modes.vote import tally

    samples = [c.result for c in view.calls if c.kind == "sample" and c.result is not None]
    if not samples:
        return ""
    # The run's own count once it has finished; the same rule over what is back until then.
    result = view.run.result if view.run is not None else None
    if getattr(result, "votes", None):
        votes, winner = dict(result.votes), result.winner  # type: ignore[union-attr]
    else:
        votes, winner, _ = tally(samples)  # type: ignore[arg-type]
    readable = sum(votes.values())
    unread = len(samples) - readable
    lines = []
    if winner is not None and votes:
        count = votes[winner]
        share = round(100 * count / readable)
        if view.finished:
            lines.append(
                f"**Agreement {share}%**: {count} of {readable} answers are "
                f"**{shown(winner)}**, {_confidence(count, readable)}."
            )
        else:
            planned = view.planned or len([c for c in view.calls if c.kind == "sample"])
            lines.append(
                f"**Counting**: {len(samples)} of {planned} samples back; "
                f"**{shown(winner)}** leads with {count}."
            )
    lines += ["", "| Answer | Votes |", "| --- | --- |"]
    for answer, count in votes.items():
        mark = " ✓" if answer == winner and view.finished else ""
        lines.append(f"| {_cell(answer)}{mark} | {'●' * count} {count} |")
    top = max(votes.values(), default=0)
    tied = [a for a, c in votes.items() if c == top]
    if len(tied) > 1 and winner is not None:
        others = ", ".join(_cell(a) for a in tied if a != winner)
        lines += [
            "",
            f"*Tie*: {_cell(winner)} and {others} have {top} vote{'s' if top != 1 else ''} "
            f"each. The rule: the answer that reached {top} first wins, counting samples in "
            f"the order they finished, so {_cell(winner)}.",
        ]
    if unread:
        lines += [
            "",
            f"{unread} sample{'s' if unread != 1 else ''} gave no answer that could be read "
            "and did not vote.",
        ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text fit for a Markdown table cell: one line, no column breaks."""
    return shown(" ".join(text.split())).replace("|", "\\|")


def _vote_summary(view: RunView) -> list[str]:
    samples = sum(1 for c in view.calls if c.kind == "sample" and c.state == "done")
    parts = [f"{samples} sample{'s' if samples != 1 else ''}"] if samples else []
    agreement = getattr(view.run.result, "agreement", None) if view.run else None
    if agreement is not None:
        parts.append(f"agreement {round(100 * agreement)}%")
    return parts


def _meter(reward: float) -> str:
    """A reward from 0 to 1 as a ten-cell bar: '▰▰▰▰▰▰▰▱▱▱'."""
    full = round(max(0.0, min(1.0, reward)) * 10)
    return "▰" * full + "▱" * (10 - full)


def _rewarded(view: RunView) -> list[tuple[CallView, float]]:
    """The calls that carry a self-scored reward, with it, in order."""
    found = []
    for call in view.calls:
        reward = getattr(call.result, "reward", None)
        if isinstance(reward, int | float):
            found.append((call, float(reward)))
    return found


def _reward_title(view: RunView, call: CallView) -> str | None:
    reward = getattr(call.result, "reward", None)
    if call.result is None or not isinstance(reward, int | float):
        return None
    return f"{call_title(call.kind, call.index)} · {_meter(reward)} {call.result.badge()}"


def reflect_details(view: RunView) -> str:
    """A reflect run beyond its steps: the trail of rewards, the final reflection and
    reward, and why the chain stopped where it did."""
    lines = []
    trail = _rewarded(view)
    if trail:
        marks = " → ".join(
            f"{reward:.2f}" + (" (answer)" if call.kind == "answer" else "")
            for call, reward in trail
        )
        lines.append(f"**Rewards**, the model's own score of its progress (0 to 1): {marks}")
    final = next((c for c in view.calls if c.kind == "answer" and c.result is not None), None)
    if final is not None and final.result is not None and final.result.remark():
        reward = getattr(final.result, "reward", None)
        scored = f" {_meter(reward)} {final.result.badge()}" if reward is not None else ""
        lines.append(f"**Final reflection**{scored}: {shown(final.result.remark())}")
    budget_stopped = getattr(view.run.result, "budget_stopped", False) if view.run else False
    if budget_stopped and not any("budget" in line for line in view.notes):
        lines.append("*The step budget stopped the chain; its answer was asked for at once.*")
    notes = notes_markdown(view)
    return "\n\n".join([*lines, notes] if notes else lines)


def _reflect_summary(view: RunView) -> list[str]:
    steps = sum(1 for c in view.calls if c.kind == "step" and c.state == "done")
    parts = [f"{steps} step{'s' if steps != 1 else ''}"] if steps else []
    trail = _rewarded(view)
    if trail:
        parts.append(f"last reward {trail[-1][1]:.2f}")
    return parts


# The only place in ui/ that names modes: how each is drawn beyond the generic view.
MODE_VIEWS: dict[str, ModeView] = {
    "single": ModeView(label="Single answer", sections="Reply"),
    # The turns are the reasoning the page exists to show: they stay open once done.
    "refine": ModeView(counted=("turns", "turn"), sections="Turns", open_kinds=frozenset({"turn"})),
    "steps": ModeView(sections="Steps", open_kinds=frozenset({"step"}), summary=_steps_summary),
    "vote": ModeView(
        counted=("samples", "sample"),
        sections="Samples",
        headline=True,
        summary=_vote_summary,
        details=vote_details,
        title=_sample_title,
    ),
    "drafts": ModeView(counted=("drafts", "draft"), sections="Drafts and synthesis"),
    "reflect": ModeView(
        sections="Steps, reflections and rewards",
        remark="Reflection",
        open_kinds=frozenset({"step"}),
        summary=_reflect_summary,
        details=reflect_details,
        title=_reward_title,
    ),
}
GENERIC = ModeView()


def mode_view(mode: str) -> ModeView:
    """How `mode`'s runs are drawn: its entry in `MODE_VIEWS`, else the generic view."""
    return MODE_VIEWS.get(mode, GENERIC)
