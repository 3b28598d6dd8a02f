"""Terminal rendering of a run's events: the thinking streams as it arrives, the answer is set
apart at the end. Pure consumer of the event stream."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

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
from llamaberry.core.holdback import HoldBack
from llamaberry.core.prices import run_cost_text
from llamaberry.core.results import Run, Usage, VoteResult, call_title, cut_off_line
from llamaberry.core.settings import on_demo_model
from llamaberry.core.terminal import TerminalStream, for_terminal


def plural(count: int, noun: str) -> str:
    """'1 call', '4 calls'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def cost_line(usage: Usage, seconds: float) -> str:
    """'2.3s · 812 tokens (120 in, 80 cached, 692 out)': how many of those in the server read
    from its prompt cache, and how many of those out were thinking, where it said."""
    cached = f", {usage.cached_tokens:,} cached" if usage.cached_tokens else ""
    thinking = f", {usage.reasoning_tokens:,} thinking" if usage.reasoning_tokens else ""
    return (
        f"{format_duration(seconds)} · {usage.total_tokens:,} tokens "
        f"({usage.prompt_tokens:,} in{cached}, {usage.completion_tokens:,} out{thinking})"
    )


def model_line(run: Run) -> str:
    """The asked model, and the one that answered when the server named another."""
    if run.served_model and run.served_model != run.model:
        return f"{run.model} (served as {run.served_model})"
    return run.model


def partial_source(run: Run) -> str:
    """Where a partial answer came from: 'turn 4's answer, the run did not finish'."""
    source = run.result.partial_source(run.answer) if run.answer is not None else None
    where = f"{source}'s answer" if source else "the best answer it had"
    return f"{where}, the run did not finish"


DEMO_LINE = "a 135M demo model answered; set GROQ_API_KEY or --base-url for real answers"


def tally_line(result: VoteResult) -> str:
    """'Votes: 2 ×2 · 3 ×2 · 5 ×1 · agreement 40% (2 of 5) · a tie, won by the first to 2'."""
    if not result.votes or result.winner is None:
        return ""
    counts = " · ".join(f"{answer} ×{count}" for answer, count in result.votes.items())
    top = result.votes.get(result.winner, 0)
    readable = sum(result.votes.values())
    line = f"Votes: {counts} · agreement {top / readable:.0%} ({top} of {readable})"
    if sum(1 for count in result.votes.values() if count == top) > 1:
        line += f" · a tie, won by the first answer to reach {top}"
    return line


def stopped(result: object) -> str:
    """' · cut off by …' naming the limit that stopped a reply early, or ''."""
    if getattr(result, "looped", False):
        return " · [yellow]stopped: it kept repeating itself[/yellow]"
    if not getattr(result, "truncated", False):
        return ""
    return f" · [red]{cut_off_line(getattr(result, 'cut_off_by', None))}[/red]"


class TerminalView:
    """Shows events on the terminal; with `quiet`, only remembers the run."""

    def __init__(self, *, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.run: Run | None = None
        self._at_line_start = True
        self._thinking = False  # the current call's own thinking is being shown
        # The call whose text streams to the terminal; calls that start while it streams (a
        # vote's samples, drafts) are shown whole when they finish, so concurrent replies
        # never interleave on the screen.
        self._holdback = HoldBack()
        # Model text streams through these: no escape sequence or key reaches the terminal
        # (the run itself, which --json prints, keeps the text as written).
        self._text = TerminalStream()
        self._thought = TerminalStream()
        # Held-back calls that finished while another call was still streaming: shown whole
        # once it is done, never in the middle of its text.
        self._waiting: list[CallFinished] = []

    def show(self, event: object) -> None:
        """Render one event."""
        if isinstance(event, RunFinished):
            self.run = event.run
        if self.quiet:
            return
        if isinstance(event, RunStarted):
            self._holdback = HoldBack()
            self._waiting = []
            self.console.print(f"[dim]{event.mode} · {escape(event.model)}[/dim]")
        elif isinstance(event, CallStarted):
            if event.kind == "step":
                return  # a step's rule carries its title, known only when it finishes
            if not self._holdback.start((event.kind, event.index)):
                return
            self.console.rule(f"[bold]{call_title(event.kind, event.index)}[/bold]", align="left")
            self._at_line_start = True
            self._thinking = False
        elif isinstance(event, ThinkingDelta | TextDelta) and self._is_held(event):
            return
        elif isinstance(event, ThinkingDelta):
            # The model's own thinking, dimmed so it never reads as the reply.
            self._think(self._thought.feed(event.text))
            self._thinking = True
        elif isinstance(event, TextDelta):
            # A step's content comes whole, just before its finish, and is shown under its
            # title there.
            if event.kind != "step":
                if self._thinking:  # the reply starts on a line of its own, after a gap
                    self._newline()
                    self._write("\n")
                    self._thinking = False
                self._write(event.text)
        elif isinstance(event, TextReset):
            self._newline()
            self.console.print(
                f"[yellow]↻ retrying from the start: {escape(event.reason)}[/yellow]"
            )
        elif isinstance(event, CallNote):
            self._newline()
            colour = "yellow" if event.note == "looped" else "dim"
            self.console.print(f"[{colour}]ⓘ {escape(event.message)}[/{colour}]")
        elif isinstance(event, CallFinished):
            self._finished(event)
        elif isinstance(event, RunFinished):
            self._flush()  # what a call that never finished still held back
            self._show_waiting()
            self._summary(event.run)

    def _is_held(self, event: ThinkingDelta | TextDelta) -> bool:
        if event.kind == "chain":
            # A reflect chain's text before any step is recognised: shown as it comes, and
            # never the live call (its steps are, once they begin).
            return self._holdback.live is not None
        # A call that was not announced streams too, when no other call is.
        return self._holdback.hold(event) or not self._holdback.claim((event.kind, event.index))

    def _think(self, text: str) -> None:
        if text:
            self.console.print(Text(text, style="dim italic"), end="")
            self.console.file.flush()
            self._at_line_start = text.endswith("\n")

    def _write(self, text: str) -> None:
        """Write model text (cleaned for the terminal as it streams)."""
        self._emit(self._text.feed(text))

    def _emit(self, text: str) -> None:
        """Write text already cleaned for the terminal."""
        if text:
            self.console.file.write(text)
            self.console.file.flush()
            self._at_line_start = text.endswith("\n")

    def _flush(self) -> None:
        self._think(self._thought.flush())
        # Written as it is: fed to the stream again, an end that could begin a key would be
        # held back once more, and lost.
        self._emit(self._text.flush())

    def _newline(self) -> None:
        self._flush()
        if not self._at_line_start:
            self.console.file.write("\n")
            self._at_line_start = True

    def _finished(self, event: CallFinished) -> None:
        held = self._holdback.finish((event.kind, event.index)) is not None
        if held and self._holdback.live is not None:
            self._waiting.append(event)  # another call is mid-stream: after it
            return
        self._show_finished(event, whole=held)
        if self._holdback.live is None:
            self._show_waiting()

    def _show_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for event in waiting:
            self._show_finished(event, whole=True)

    def _show_finished(self, event: CallFinished, *, whole: bool) -> None:
        result = event.result
        title = getattr(result, "title", None)
        label = call_title(event.kind, event.index) + (
            f": {escape(for_terminal(title))}" if title else ""
        )
        if whole:
            # Its thinking and text were held back while another call streamed: shown whole
            # now, the thinking dimmed and a blank line before the reply, as a live call's.
            self._newline()
            self.console.rule(f"[bold]{label}[/bold]", align="left")
            if result.thinking:
                self.console.print(Text(for_terminal(result.thinking), style="dim italic"))
                self._write("\n")
            self._write(result.content)
        self._newline()
        badge = result.badge()
        if event.kind == "step":
            # A step is shown whole when it is complete, its reward (if any) beside its title.
            title = f"{label} · {escape(badge)}" if badge else label
            self.console.rule(f"[bold]{title}[/bold]", align="left")
            self._write(result.content)
            self._newline()
            self._remark(result.remark())
            attempts = getattr(result, "attempts", 1)
            tries = f" · {attempts} tries" if attempts > 1 else ""
            # A step read from a longer reply has no tokens of its own: its time is shown.
            cost = (
                cost_line(result.usage, result.seconds)
                if result.usage.total_tokens
                else format_duration(result.seconds)
            )
            self.console.print(f"[dim]{cost}{tries}[/dim]")
            return
        self._remark(result.remark())
        beside = f" · {escape(badge)}" if badge else ""
        cost = (
            cost_line(result.usage, result.seconds)
            if result.usage.total_tokens
            else format_duration(result.seconds)
        )
        self.console.print(f"[dim]{label}{beside} · {cost}[/dim]{stopped(result)}")

    def _remark(self, text: str) -> None:
        # A reflection on what came before it: set apart, so it never reads as the reasoning.
        if text:
            self.console.print(Text(f"↳ {for_terminal(text)}", style="italic"))

    def _summary(self, run: Run) -> None:
        self.console.print()
        steps = [call for call in run.result.call_results() if call.kind == "step"]
        if steps:
            # The same figure the web UI shows: time spent on the steps, retries included.
            thinking = sum(step.seconds for step in steps)
            self.console.print(
                f"[bold]Thinking time: {format_duration(thinking)}[/bold] "
                f"[dim]({len(steps)} steps)[/dim]"
            )
        if run.answer:
            title, border = "[bold]Answer[/bold]", "green"
            if run.partial:
                # Set apart from a finished run's answer: the error line follows on stderr.
                title, border = f"[bold]Partial answer[/bold] · {partial_source(run)}", "yellow"
            # The model's words exactly as written: as Markdown, a reply opening with an HTML-like
            # tag (<response>) rendered blank, and as console markup "[red]" would vanish.
            # soft_wrap=False for this one print: the console soft-wraps so streamed text flows,
            # and under soft wrap a Panel crops its lines at the border instead of wrapping them.
            self.console.print(
                Panel(
                    Text(for_terminal(run.answer), overflow="fold"),
                    title=title,
                    title_align="left",
                    border_style=border,
                ),
                soft_wrap=False,
            )
        if isinstance(run.result, VoteResult) and (tally := tally_line(run.result)):
            self.console.print(Text(for_terminal(tally)))
        if run.answer and on_demo_model(run.provider, run.model):
            self.console.print(f"[yellow]{DEMO_LINE}[/yellow]")
        status = "" if run.ok else f" · [red]{run.status}[/red]"
        self.console.print(
            f"[dim]{run.mode} · {escape(for_terminal(model_line(run)))} · "
            f"{plural(len(run.calls), 'call')} · "
            f"{cost_line(run.usage, run.seconds)} · {escape(run_cost_text(run))}[/dim]"
            f"{status}"
        )
