"""The web UI's event-to-view functions, fed hand-built events and real engine streams."""

from __future__ import annotations

from llamaberry_ui.views import RunView, fold

from llamaberry import (
    CallFinished,
    CallStarted,
    Engine,
    FinalAnswer,
    Run,
    RunFinished,
    RunStarted,
    Step,
    Synthesis,
    TextDelta,
    TextReset,
    Turn,
    Usage,
)
from llamaberry.testing import FakeServer, Fault

from .conftest import refine_script


def started(mode: str = "refine") -> RunStarted:
    return RunStarted(run_id="r1", mode=mode, model="m", question="q")


def turn(index: int, content: str, tokens: int = 10, seconds: float = 1.5) -> CallFinished:
    usage = Usage(prompt_tokens=tokens - 2, completion_tokens=2, total_tokens=tokens)
    result = Turn(index=index, content=content, answer=content, usage=usage, seconds=seconds)
    return CallFinished(kind="turn", index=index, result=result)


def finished(status: str = "ok", error: str | None = None, **fields) -> RunFinished:
    run = Run(mode="refine", model="m", provider="groq", question="q", status=status, error=error)
    for name, value in fields.items():
        setattr(run, name, value)
    return RunFinished(run=run)


def test_a_running_call_is_a_section_titled_with_a_spinner_and_its_text_so_far():
    view = fold(
        [
            started(),
            CallStarted(kind="turn", index=1),
            TextDelta(kind="turn", index=1, text="## Reas"),
            TextDelta(kind="turn", index=1, text="oning"),
        ]
    )
    [message] = view.messages()
    assert message["role"] == "assistant"
    assert message["content"] == "## Reasoning"
    assert message["metadata"]["title"] == "Turn 1"
    assert message["metadata"]["status"] == "pending"
    assert "duration" not in message["metadata"]


def test_a_call_with_no_text_yet_still_shows_a_body():
    view = fold([started(), CallStarted(kind="turn", index=1)])
    assert view.messages()[0]["content"].strip()


def test_a_finished_turn_shows_its_seconds_and_tokens_and_loses_its_spinner():
    view = fold([started(), CallStarted(kind="turn", index=1), turn(1, "text", 812, 2.345)])
    metadata = view.messages()[0]["metadata"]
    # No spinner, and open: the turns are the reasoning the page is there to show.
    assert "status" not in metadata
    assert metadata["duration"] == 2.35
    assert metadata["log"] == "812 tokens"


def test_earlier_turns_stay_whole_while_a_later_one_streams():
    view = fold(
        [
            started(),
            CallStarted(kind="turn", index=1),
            TextDelta(kind="turn", index=1, text="first turn"),
            turn(1, "first turn"),
            CallStarted(kind="turn", index=2),
            TextDelta(kind="turn", index=2, text="second"),
        ]
    )
    first, second = view.messages()
    assert (first["content"], first["metadata"].get("status")) == ("first turn", None)
    assert (second["content"], second["metadata"]["status"]) == ("second", "pending")
    view.planned = 3
    assert view.summary_markdown().startswith("*Turn 2 of 3…* · 0s · 11 tokens so far")


def test_the_synthesis_answer_is_set_apart_and_the_summary_has_cost():
    synthesis = Synthesis(
        content="## Concise Answer\nThree.",
        answer="Three.",
        usage=Usage(prompt_tokens=5, completion_tokens=3, total_tokens=8),
        seconds=1.0,
    )
    view = fold(
        [
            started(),
            CallStarted(kind="synthesis", index=1),
            CallFinished(kind="synthesis", index=1, result=synthesis),
            finished(answer="Three.", seconds=3.2, usage=Usage(total_tokens=8, prompt_tokens=5)),
        ]
    )
    assert view.messages()[0]["metadata"]["title"] == "Synthesis"
    # The synthesis here has no concise-answer field: the card says so under the answer.
    assert view.answer_markdown() == (
        "Three.\n\n---\n\n_**Answer** (the model did not follow the answer format; its "
        "reply as written)_"
    )
    assert view.summary_markdown().startswith("Done · 3.2s in all · 8 tokens")
    assert view.error_markdown() == ""


def test_a_retried_stream_discards_its_partial_text():
    view = fold(
        [
            started(),
            CallStarted(kind="turn", index=1),
            TextDelta(kind="turn", index=1, text="half a rep"),
            TextReset(kind="turn", index=1, reason="the connection dropped"),
        ]
    )
    message = view.messages()[0]
    assert "half a rep" not in message["content"]
    assert "retrying: the connection dropped" in message["metadata"]["log"]
    view.apply(TextDelta(kind="turn", index=1, text="whole reply"))
    assert view.messages()[0]["content"] == "whole reply"
    assert "log" not in view.messages()[0]["metadata"]


def test_a_failed_run_keeps_finished_turns_and_shows_one_error_line():
    view = fold(
        [
            started(),
            CallStarted(kind="turn", index=1),
            turn(1, "kept"),
            CallStarted(kind="turn", index=2),
            TextDelta(kind="turn", index=2, text="partial"),
            finished("failed", "Turn 2 failed: Rate limited on requests; it resets in 2m59s."),
        ]
    )
    first, second = view.messages()
    assert first["content"] == "kept"
    assert second["metadata"]["title"] == "Turn 2 (failed)"
    assert second["metadata"].get("status") != "pending"
    assert view.error_markdown() == (
        "**Error:** Turn 2 failed: Rate limited on requests; it resets in 2m59s."
    )
    assert "\n" not in view.error_markdown()
    assert view.summary_markdown().startswith("Failed")


def test_stopping_marks_the_running_call_and_keeps_what_finished():
    view = fold(
        [
            started(),
            CallStarted(kind="turn", index=1),
            turn(1, "kept"),
            CallStarted(kind="turn", index=2),
            TextDelta(kind="turn", index=2, text="cut"),
        ]
    ).stop()
    first, second = view.messages()
    assert (first["content"], first["metadata"]["title"]) == ("kept", "Turn 1")
    assert second["metadata"] == {"title": "Turn 2 (stopped)"}  # open, no spinner
    assert second["content"] == "cut"
    assert view.summary_markdown().startswith("Stopped")
    assert view.error_markdown() == ""


def test_stopping_a_finished_run_changes_nothing():
    view = fold([started(), CallStarted(kind="turn", index=1), turn(1, "a"), finished("ok")])
    before = view.messages()
    assert view.stop().messages() == before
    assert view.state == "ok"


def test_steps_show_their_titles_thinking_time_and_the_final_answer():
    events = [started("steps")]
    for index, seconds in ((1, 1.25), (2, 2.5)):
        step = Step(
            index=index,
            title=f"Look at part {index}",
            content=f"Reasoning {index}.",
            next_action="continue",
            usage=Usage(total_tokens=20),
            seconds=seconds,
        )
        events += [
            CallStarted(kind="step", index=index),
            TextDelta(kind="step", index=index, text=step.content),
            CallFinished(kind="step", index=index, result=step),
        ]
    events += [
        CallStarted(kind="answer", index=1),
        TextDelta(kind="answer", index=1, text="Forty-two."),
        CallFinished(
            kind="answer", index=1, result=FinalAnswer(content="Forty-two.\n", seconds=0.5)
        ),
    ]
    view = fold(events)
    titles = [m["metadata"]["title"] for m in view.messages()]
    # The answer is in the answer card, so it is not repeated as a section.
    assert titles == ["Step 1: Look at part 1", "Step 2: Look at part 2"]
    assert [m["metadata"]["duration"] for m in view.messages()] == [1.25, 2.5]
    # Steps stay open once finished (no status means an open section without a spinner).
    assert all("status" not in m["metadata"] for m in view.messages())
    assert view.messages()[1]["content"] == "Reasoning 2."
    assert view.answer == "Forty-two."
    assert view.thinking_seconds == 3.75
    view.apply(finished("ok", seconds=4.5))
    view.mode = "steps"
    assert "2 steps · total thinking time 3.8s" in view.summary_markdown()


def test_a_step_in_progress_shows_thinking_not_raw_json():
    view = fold(
        [
            started("steps"),
            CallStarted(kind="step", index=1),
            TextDelta(kind="step", index=1, text='{"title": "x"'),
        ]
    )
    assert "{" not in view.messages()[0]["content"]


def test_a_compare_column_shows_the_streaming_call_then_the_answer():
    view = fold(
        [
            started("single"),
            CallStarted(kind="answer", index=1),
            TextDelta(kind="answer", index=1, text="Par"),
        ]
    )
    assert view.live_markdown() == "*Answer…*\n\nPar"
    result = Turn(index=1, content="Paris.", answer="Paris.", usage=Usage(total_tokens=9))
    view.apply(CallFinished(kind="answer", index=1, result=result))
    view.apply(finished("ok", answer="Paris.", seconds=0.4, usage=Usage(total_tokens=9)))
    assert view.live_markdown() == "Paris."
    assert view.stats_markdown() == "Done · 400ms in all · 9 tokens · unknown price"


def test_an_error_before_the_stream_is_one_line():
    view = RunView().fail("No API key: set GROQ_API_KEY.")
    assert view.error_markdown() == "**Error:** No API key: set GROQ_API_KEY."
    assert view.messages() == []


async def test_a_real_refine_stream_folds_into_three_turns_a_synthesis_and_the_answer():
    async with FakeServer() as server:
        server.reply_with(refine_script)
        async with Engine(api_key="test-key", base_url=server.groq_base_url) as engine:
            view = RunView()
            async for event in engine.refine_stream("How many r in strawberry?"):
                view.apply(event)
    titles = [m["metadata"]["title"] for m in view.messages()]
    assert titles == ["Turn 1", "Turn 2", "Turn 3", "Synthesis"]
    # The turns stay open once done; the synthesis folds (its answer is on the card).
    assert [m["metadata"].get("status") for m in view.messages()] == [None, None, None, "done"]
    assert view.answer == 'There are 3 r\'s in "strawberry".'
    assert view.state == "ok"
    assert view.usage.total_tokens == sum(
        int(m["metadata"]["log"].split()[0].replace(",", "")) for m in view.messages()
    )


async def test_a_real_provider_failure_folds_into_one_error_line_with_turn_one_kept():
    async with FakeServer() as server:
        server.enqueue("## Answer\n3", Fault.status(401))
        async with Engine(api_key="test-key", base_url=server.groq_base_url) as engine:
            view = RunView()
            async for event in engine.refine_stream("q", turns=2):
                view.apply(event)
    assert view.state == "failed"
    assert view.messages()[0]["content"] == "## Answer\n3"
    assert view.error_markdown().startswith("**Error:** Turn 2 failed:")
    assert "Traceback" not in view.error_markdown()


def test_sessions_with_the_same_key_and_model_share_one_rate_limiter():
    from llamaberry_ui.runs import LIMITERS

    from llamaberry.core.settings import Settings

    shared_limiter = LIMITERS.get
    one = Settings(api_key="key-a", model="m", rpm=30)
    assert shared_limiter(one) is shared_limiter(Settings(api_key="key-a", model="m", rpm=30))
    assert shared_limiter(one) is not shared_limiter(Settings(api_key="key-b", model="m", rpm=30))
    assert shared_limiter(one) is not shared_limiter(Settings(api_key="key-a", model="n", rpm=30))
    assert shared_limiter(one).rpm == 30


# -- the answer card and its labels (#16) -------------------------------------------------------


def synthesis(content: str, **parsed) -> CallFinished:
    result = Synthesis(content=content, answer=parsed.get("concise_answer") or content, **parsed)
    return CallFinished(kind="synthesis", index=1, result=result)


def structured_turn(index: int, answer: str) -> CallFinished:
    result = Turn(index=index, content=f"## Answer\n{answer}", answer=answer, structured=True)
    return CallFinished(kind="turn", index=index, result=result)


def test_the_card_heads_with_the_concise_answer_and_puts_the_comprehensive_one_under_it():
    view = fold(
        [
            started(),
            synthesis(
                "...", concise_answer="Three.", comprehensive_answer="There are three r's: 3, 8, 9."
            ),
        ]
    )
    assert view.answer_markdown() == "### Three.\n\nThere are three r's: 3, 8, 9."
    assert view.answer_label() == "**Answer**"


def test_a_synthesis_that_missed_the_format_falls_back_to_the_last_turns_answer_labelled():
    view = fold(
        [
            started(),
            structured_turn(1, "2"),
            structured_turn(2, "3"),
            synthesis("I merged the turns and think it is three, roughly."),
            finished(answer="I merged the turns and think it is three, roughly.", seconds=1.0),
        ]
    )
    # The label is on the card, under the answer, not beside the stats.
    answer, _, label = view.answer_markdown().partition("\n\n---\n\n")
    assert answer == "3" and "Answer from Turn 2" in label
    assert "Answer from" not in view.summary_markdown()


def test_a_partial_answer_is_labelled_partial():
    view = fold(
        [
            started(),
            structured_turn(1, "3"),
            finished("failed", error="Rate limited.", answer="3", partial=True),
        ]
    )
    answer, _, label = view.answer_markdown().partition("\n\n---\n\n")
    assert answer == "3" and "**Partial answer**" in label
    assert view.error_markdown() == "**Error:** Rate limited."


def test_a_step_the_model_titled_step_1_is_not_titled_twice():
    step = Step(index=1, title="Step 1", content="c", next_action="continue")
    named = Step(index=2, title="Step 2: Check", content="c", next_action="continue")
    view = fold(
        [
            started("steps"),
            CallFinished(kind="step", index=1, result=step),
            CallFinished(kind="step", index=2, result=named),
        ]
    )
    assert [m["metadata"]["title"] for m in view.messages()] == ["Step 1", "Step 2: Check"]


def test_terminal_advice_in_an_error_is_said_in_the_pages_words():
    view = RunView().fail(
        "Model 'x' is not served; available: a, b. Choose one with --model or LLAMABERRY_MODEL."
    )
    assert view.error_markdown().endswith("available: a, b. Pick a model in Settings.")


def test_a_saved_run_reopens_as_the_view_a_live_run_ends_with():
    turns = [
        Turn(index=i, content=f"## Answer\n{i}", answer=str(i), structured=True) for i in (1, 2)
    ]
    run = Run(
        mode="refine",
        model="m",
        provider="groq",
        question="q",
        status="ok",
        answer="Two.",
        turns=turns,
        synthesis=Synthesis(
            content="s", answer="Two.", concise_answer="Two.", comprehensive_answer="It is two."
        ),
        seconds=2.0,
    )
    view = RunView.from_run(run)
    assert [m["metadata"]["title"] for m in view.messages()] == ["Turn 1", "Turn 2", "Synthesis"]
    assert view.answer_markdown() == "### Two.\n\nIt is two."
    assert view.summary_markdown().startswith("Done · 2 turns · 2.0s in all")


def test_compare_says_whether_finished_answers_agree():
    from llamaberry_ui.views import agreement

    def answered(text: str) -> RunView:
        view = RunView(state="ok")
        view.answer = text
        return view

    assert agreement([answered("3"), answered("There are 3 r's.")]) == (
        "✓ The 2 answers agree",
        "agree",
    )
    assert agreement([answered("3"), answered("2")])[1] == "differ"
    assert agreement([answered("3"), RunView(state="running")]) == ("", "")


async def test_saved_vote_drafts_and_reflect_runs_reopen_as_their_live_views_ended():
    from .test_ui_app import CHAIN, drafting, voting

    async with FakeServer() as server:
        server.reply_with(voting(["7", "seven", "8"]))
        async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
            vote = fold([e async for e in engine.stream("vote", "q", samples=3)])
            server.reply_with(drafting)
            drafts = fold([e async for e in engine.stream("drafts", "q", drafts=2)])
            server.reply_with(lambda request: CHAIN)
            reflect = fold([e async for e in engine.stream("reflect", "q", reflect_every=2)])
    for live in (vote, drafts, reflect):
        assert live.run is not None
        reopened = RunView.from_run(live.run)
        assert reopened.messages() == live.messages()
        assert reopened.answer_markdown() == live.answer_markdown()
        assert reopened.details_markdown() == live.details_markdown()
    assert [m["metadata"]["title"].split(" · ")[0] for m in vote.messages()] == [
        "Sample 1",
        "Sample 2",
        "Sample 3",
    ]
    assert "**Agreement 67%**: 2 of 3 answers are **7**" in vote.details_markdown()
    assert [m["metadata"]["title"] for m in drafts.messages()] == [
        "Draft 1",
        "Draft 2",
        "Synthesis",
    ]


def test_a_mode_with_no_view_of_its_own_gets_the_answer_and_one_section_per_call():
    from llamaberry.core.results import CallResult

    view = fold(
        [
            started("ponder"),
            CallStarted(kind="thought", index=1),
            TextDelta(kind="thought", index=1, text="hmm"),
            CallFinished(kind="thought", index=1, result=CallResult(content="hmm, 4")),
            RunFinished(
                run=Run(
                    mode="ponder", model="m", provider="groq", question="q", status="ok", answer="4"
                )
            ),
        ]
    )
    assert view.mode == "ponder"
    assert [m["metadata"]["title"] for m in view.messages()] == ["Thought 1"]
    assert view.messages()[0]["content"] == "hmm, 4"
    assert view.answer_markdown() == "4"
    assert view.details_markdown() == ""
    assert view.summary_markdown().startswith("Done · ")


def test_a_finished_run_shows_its_cached_tokens_and_its_cost():
    usage = Usage(prompt_tokens=1840, completion_tokens=300, total_tokens=2140, cached_tokens=1210)
    view = fold([started(), finished("ok", answer="x", seconds=1.0, usage=usage, cost=0.0031)])
    assert "1,840 in, 1,210 cached, 300 out" in view.summary_markdown()
    assert "$0.0031" in view.summary_markdown()
    local = fold(
        [started(), finished("ok", answer="x", seconds=1.0, usage=usage, provider="local")]
    )
    assert "free (local model)" in local.summary_markdown()
