"""The reflect mode: tagged steps read as they stream, reflections and rewards beside them,
the step budget enforced by closing the stream, and an answer (or a clear state) at the end."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner

from llamaberry import CallFinished, Engine, Run, RunFinished, TextDelta, TextReset
from llamaberry.cli import cli
from llamaberry.core.errors import RunFailedError
from llamaberry.eval import evaluate, load_dataset, report_markdown, stage_answers
from llamaberry.modes.reflect import (
    ReflectAnswer,
    ReflectResult,
    ReflectStep,
    read_chain,
    read_reward,
)
from llamaberry.store import Store
from llamaberry.testing import FakeServer, Fault, RecordedRequest, Reply

from .conftest import SYNTHESIS, refine_script

CHAIN = """<step>The word is s-t-r-a-w-b-e-r-r-y.</step>
<count>5</count>
<step>The r's are at positions 3, 8 and 9.</step>
<count>4</count>
<reflection>Spelling it out makes the count reliable.</reflection>
<reward>0.9</reward>
<step>Three positions, so three r's.</step>
<answer>3</answer>
<reflection>Checked letter by letter; confident.</reflection>
<reward>0.95</reward>"""


def _runaway(steps: int) -> str:
    return "".join(f"<step>Thinking about it, round {n}.</step>\n" for n in range(1, steps + 1))


async def _run(server: FakeServer, *replies: str | Reply, **options) -> Run:
    """A reflect run on the scripted replies; a failed run is returned, not raised."""
    server.enqueue(*replies)
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        try:
            return await engine.run("reflect", "How many r's in strawberry?", **options)
        except RunFailedError as failed:
            return failed.run


# -- reading the chain ---------------------------------------------------------------------------


async def test_each_step_keeps_the_reflection_and_reward_that_follow_it(server: FakeServer):
    run = await _run(server, CHAIN, step_budget=6, reflect_every=2)
    assert run.status == "ok" and run.answer == "3"
    result = run.result
    assert isinstance(result, ReflectResult)
    assert [s.content for s in result.steps] == [
        "The word is s-t-r-a-w-b-e-r-r-y.",
        "The r's are at positions 3, 8 and 9.",
        "Three positions, so three r's.",
    ]
    first, second, third = result.steps
    assert first.reward is None and first.reflection is None
    assert second.reflection == "Spelling it out makes the count reliable."
    assert second.reward == 0.9 and second.verdict == "go on"
    assert third.reward is None
    assert result.final is not None and result.final.reward == 0.95
    assert result.final.reflection == "Checked letter by letter; confident."
    assert result.answer_from == "answer" and not result.budget_stopped
    assert result.confidence() == 0.95  # the last reward, on the answer
    assert result.raw == [CHAIN]  # the reply exactly as it came
    # The step budget and how often to reflect are in what the model was told.
    system = server.requests[0].system or ""
    assert "budget of 6 steps" in system and "every 2 steps" in system
    assert run.settings["step_budget"] == 6 and run.settings["reflect_every"] == 2


def test_tags_left_open_end_where_the_next_part_begins():
    chain = read_chain("<step>one\n<step>two</step><reflection>fine<reward>0.6</reward><answer>7")
    assert [(p.kind, p.content) for p in chain.parts] == [
        ("step", "one"),
        ("step", "two"),
        ("answer", "7"),
    ]
    assert chain.parts[1].reflection == "fine" and chain.parts[1].reward == "0.6"


def test_a_closing_tag_without_its_opening_still_makes_a_step():
    chain = read_chain("First I add.</step><step>Then I check.</step>")
    assert [p.content for p in chain.parts] == ["First I add.", "Then I check."]


def test_labels_stand_in_for_tags_when_a_model_drops_them():
    chain = read_chain("Step 1: add them\nReflection: fine so far\nReward: 7/10\nAnswer: 12")
    assert [(p.kind, p.content) for p in chain.parts] == [("step", "add them"), ("answer", "12")]
    assert chain.parts[0].reflection == "fine so far" and chain.parts[0].reward == "7/10"
    prose = read_chain("Step-by-step, the sum is 12.")
    assert prose.parts == [] and prose.trailing == "Step-by-step, the sum is 12."


def test_rewards_are_read_in_the_forms_models_write_them():
    assert read_reward("0.7") == (0.7, False)
    assert read_reward("Reward: 0.7") == (0.7, False)
    assert read_reward("7/10") == (0.7, False)
    assert read_reward("8 out of 10") == (0.8, False)
    assert read_reward("a reward of 8 (out of 10)") == (0.8, False)
    assert read_reward("70%") == (0.7, False)
    assert read_reward("1.4") == (1.0, True)  # out of range: clamped, and flagged
    assert read_reward("-0.2") == (0.0, True)
    assert read_reward("very good") == (None, False)


async def test_a_reward_written_as_a_label_or_out_of_range_is_read_and_flagged(
    server: FakeServer,
):
    reply = (
        "<step>Add 2 and 2.</step>\n<reflection>Easy.</reflection>\nReward: 7/10\n"
        "<step>It is 4.</step>\n<reflection>Sure.</reflection><reward>1.5</reward>\n"
        "<answer>4</answer>"
    )
    run = await _run(server, reply)
    first, second = run.result.steps
    assert first.reward == 0.7 and first.verdict == "adjust" and not first.reward_clamped
    assert second.reward == 1.0 and second.reward_clamped and second.reward_written == "1.5"
    assert "clamped" in second.badge()
    assert run.answer == "4"


async def test_without_an_answer_tag_the_trailing_text_is_the_answer_and_it_says_so(
    server: FakeServer,
):
    run = await _run(server, "<step>Count them: 3.</step>\nAnswer: 3 r's")
    assert run.status == "ok" and run.answer == "3 r's"
    assert run.result.answer_from == "trailing text" and run.result.final is None
    assert run.result.confidence() is None
    assert any("no <answer>" in note and "after its last step" in note for note in run.notes)
    assert len(server.requests) == 1  # the model ended on its own: no closing call


async def test_without_an_answer_or_trailing_text_the_last_step_is_the_answer(
    server: FakeServer,
):
    run = await _run(server, "<step>Spell it.</step><step>So there are 3.</step>")
    assert run.status == "ok" and run.answer == "So there are 3."
    assert run.result.answer_from == "last step"
    assert any("its last step is taken as the answer" in note for note in run.notes)


async def test_a_reply_with_no_step_and_no_answer_ends_failed_with_its_text_kept(
    server: FakeServer,
):
    run = await _run(server, "<reflection>I am not sure where to start.</reflection>")
    assert run.status == "failed" and run.answer is None
    assert "no answer and no step" in (run.error or "")
    assert run.result.raw == ["<reflection>I am not sure where to start.</reflection>"]
    assert run.error_kind is not None


# -- the budget ----------------------------------------------------------------------------------


async def test_a_runaway_chain_is_stopped_at_its_budget_and_its_stream_closed(
    server: FakeServer,
):
    runaway = Reply(_runaway(60), chunk_delay=0.005, chunk_words=2)
    closing = "<answer>3</answer><reflection>Ran long.</reflection><reward>0.4</reward>"
    run = await _run(server, runaway, closing, step_budget=5)
    assert run.status == "ok"
    result = run.result
    assert result.budget_stopped
    assert [s.index for s in result.steps] == [1, 2, 3, 4, 5]
    chain = server.requests[0]
    assert chain.answered_at is None  # the 60-step reply was never read to its end
    assert run.calls[0].closed_early
    # Read as far as the step past the budget began, and not on to the sixtieth.
    assert "round 5" in result.raw[0] and "round 7" not in result.raw[0]
    assert any("budget of 5 steps" in note for note in run.notes)
    # The closing call is given the steps in budget and told why it must answer now.
    closing_request = server.requests[1]
    assert "used all 5 steps" in (closing_request.user or "")
    assert "Write no more steps: give your final answer" in (closing_request.user or "")
    given = closing_request.messages[-2]["content"]
    assert "round 5" in given and "round 6" not in given
    assert run.answer == "3" and result.final is not None and result.final.reward == 0.4
    assert result.final.verdict == "go back"


async def test_a_chain_cut_off_by_its_length_limit_gets_a_closing_call(server: FakeServer):
    cut = Reply("<step>Spell it out.</step><step>Positions 3, 8", finish_reason="length")
    run = await _run(server, cut, "<answer>3</answer>")
    assert len(server.requests) == 2
    assert "cut off" in (server.requests[1].user or "")
    # It may finish the thought within what is left of its budget, and is told how much that is.
    assert "used 2 of your 12 steps. Take at most 10 more steps" in (server.requests[1].user or "")
    assert run.answer == "3" and not run.result.budget_stopped
    assert [s.content for s in run.result.steps] == ["Spell it out.", "Positions 3, 8"]
    assert len(run.result.raw) == 2


# -- events, terminal, history, compare, eval ----------------------------------------------------


async def test_each_step_arrives_as_an_event_with_its_reward_before_the_reply_ends(
    server: FakeServer,
):
    server.enqueue(Reply(CHAIN, chunk_delay=0.01))
    finished: list[tuple[str, int, float | None, bool]] = []
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        async for event in engine.stream("reflect", "q", reflect_every=2):
            if isinstance(event, CallFinished):
                result = event.result
                assert isinstance(result, ReflectStep | ReflectAnswer)
                # Still streaming: the server has not finished sending the reply.
                ended = server.requests[0].answered_at is not None
                finished.append((event.kind, event.index, result.reward, ended))
    assert finished[:3] == [
        ("step", 1, None, False),
        ("step", 2, 0.9, False),
        ("step", 3, None, False),
    ]
    assert finished[3][:3] == ("answer", 1, 0.95)


async def test_a_step_s_text_events_add_up_to_its_content(server: FakeServer):
    server.enqueue(CHAIN)
    texts: dict[tuple[str, int], str] = {}
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        async for event in engine.stream("reflect", "q"):
            if isinstance(event, TextDelta):
                texts[(event.kind, event.index)] = texts.get((event.kind, event.index), "") + (
                    event.text
                )
    assert texts[("step", 2)] == "The r's are at positions 3, 8 and 9."
    assert texts[("answer", 1)] == "3"
    assert not any("<" in text for text in texts.values())


def test_the_terminal_shows_each_step_with_its_reward_beside_it(fake_server: FakeServer):
    fake_server.enqueue(CHAIN)
    env = {"GROQ_API_KEY": "k", "GROQ_BASE_URL": fake_server.groq_base_url}
    result = CliRunner().invoke(
        cli, ["ask", "q", "--mode", "reflect", "--reflect-every", "2"], env=env
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Step 2 · reward 0.90 · go on" in out
    assert "Spelling it out makes the count reliable." in out
    assert "Answer · reward 0.95 · go on" in out
    assert "<step>" not in out
    assert out.index("Step 1") < out.index("Step 2") < out.index("Step 3")


def test_the_budget_flag_is_range_checked_with_one_line(fake_server: FakeServer):
    env = {"GROQ_API_KEY": "k", "GROQ_BASE_URL": fake_server.groq_base_url}
    result = CliRunner().invoke(
        cli, ["ask", "q", "--mode", "reflect", "--step-budget", "0"], env=env
    )
    assert result.exit_code != 0
    assert "step_budget must be a whole number from 1 to 50 (got 0)." in result.output
    assert "Traceback" not in result.output
    assert fake_server.requests == []


def test_json_holds_the_steps_rewards_answer_and_raw_text(fake_server: FakeServer):
    fake_server.enqueue(CHAIN)
    env = {"GROQ_API_KEY": "k", "GROQ_BASE_URL": fake_server.groq_base_url}
    result = CliRunner().invoke(
        cli, ["ask", "q", "--mode", "reflect", "--json"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["mode"] == "reflect" and data["answer"] == "3"
    reflect = data["result"]
    assert reflect["mode"] == "reflect"
    assert [s["reward"] for s in reflect["steps"]] == [None, 0.9, None]
    assert reflect["final"]["reward"] == 0.95 and reflect["raw"] == [CHAIN]
    assert reflect["budget_stopped"] is False and reflect["answer_from"] == "answer"


async def test_a_reflect_run_reads_back_from_the_history_as_it_was(server: FakeServer, tmp_path):
    server.enqueue(CHAIN)
    history = Store(tmp_path / "h.db")
    async with Engine(api_key="k", base_url=server.groq_base_url, history=history) as engine:
        run = await engine.run("reflect", "q", reflect_every=2)
    history.flush()
    back = Store(tmp_path / "h.db").get(run.id)
    assert isinstance(back.result, ReflectResult)
    assert back.result == run.result
    assert back.result.steps[1].reward == 0.9 and back.answer == "3"


async def test_eval_scores_reflect_s_answer_and_its_final_stage(server: FakeServer, tmp_path):
    server.reply_with(lambda request: CHAIN)
    path = tmp_path / "two.jsonl"
    path.write_text(
        json.dumps({"question": "r's in strawberry?", "answer": "3"})
        + "\n"
        + json.dumps({"question": "r's in raspberry?", "answer": "2"})
        + "\n"
    )
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        report = await evaluate(engine, load_dataset(path), ("reflect",))
    assert [(r.mode, r.correct) for r in report.results] == [("reflect", True), ("reflect", False)]
    assert [(s.stage, s.correct) for s in report.results[0].stages] == [("final", True)]
    # The last reward on the answer is the mode's own confidence, checked against correctness.
    assert [r.confidence for r in report.results] == [0.95, 0.95]
    [band] = [b for b in report.confidence if b.mode == "reflect"]
    assert (band.bucket, band.items, band.correct) == ("80–99%", 2, 1)
    assert (
        "A mode's confidence is its own: reflect's is the reward the model gave its own answer."
        in report_markdown(report)
    )
    assert stage_answers(await _run(server)) == [("final", "3")]


def test_compare_runs_all_six_modes(fake_server: FakeServer):
    def handler(request: RecordedRequest):
        system = request.system or ""
        if "JSON" in system:
            return json.dumps(
                {"title": "Count", "content": "3 r's.", "next_action": "final_answer"}
            )
        if "Answer: <your final answer>" in system:
            return "Counting.\n\nAnswer: 3"
        if "<draft" in (request.user or ""):
            return SYNTHESIS
        if "Write a careful, complete answer" in system:
            return "A draft: 3."
        if "<reflection>" in system:
            return CHAIN
        return refine_script(request)

    fake_server.reply_with(handler)
    env = {"GROQ_API_KEY": "k", "GROQ_BASE_URL": fake_server.groq_base_url}
    modes = ["single", "refine", "steps", "vote", "drafts", "reflect"]
    result = CliRunner().invoke(
        cli, ["compare", "q", "--modes", ",".join(modes), "--json"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    own = [e for e in data["entries"] if not e["derived"]]
    assert [e["mode"] for e in own] == modes
    assert all(e["status"] == "ok" and e["answer"] for e in own)
    assert [r["mode"] for r in data["runs"]] == modes
    assert data["runs"][5]["result"]["steps"][1]["reward"] == 0.9


async def test_closing_the_stream_mid_chain_cancels_the_call_and_keeps_the_steps(
    server: FakeServer,
):
    server.enqueue(Reply(_runaway(40), chunk_delay=0.02))
    ended: list[Run] = []
    async with Engine(
        api_key="k", base_url=server.groq_base_url, history=False, on_finish=ended.append
    ) as engine:
        stream = engine.stream("reflect", "q", step_budget=50)
        async for event in stream:
            if isinstance(event, CallFinished) and event.index == 2:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.1)
    [run] = ended
    assert run.status == "cancelled"
    assert [s.index for s in run.result.steps] == [1, 2]
    assert server.requests[0].answered_at is None
    assert run.result.raw and "round 2" in run.result.raw[0]


async def test_serve_streams_steps_and_rewards_as_reasoning_and_the_answer_as_content(
    server: FakeServer,
):
    from .test_serve import joined, start_endpoint, stream_parts

    server.enqueue(Reply(CHAIN, chunk_delay=0.005))
    async for endpoint in start_endpoint(server):
        models = [m.id async for m in endpoint.client.models.list()]
        parts, _ = await stream_parts(endpoint.client, "reflect", extra_body={"reflect_every": 2})
    assert "reflect" in models
    reasoning = joined(parts, "reasoning")
    assert "### Step 2\n\nThe r's are at positions 3, 8 and 9." in reasoning
    assert "> Spelling it out makes the count reliable." in reasoning
    assert "*reward 0.90 · go on*" in reasoning
    assert "<step>" not in reasoning
    assert joined(parts, "content") == "3"


async def test_a_stream_retried_from_the_start_does_not_keep_its_first_attempt_s_steps(
    server: FakeServer,
):
    first_try = "<step>A first try.</step>\n<step>Another piece of it.</step>\n<step>And"
    server.enqueue(Fault.stream_error(12, "Service overloaded", text=first_try), CHAIN)
    events = []
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        async for event in engine.stream("reflect", "q"):
            events.append(event)
    resets = [e for e in events if isinstance(e, TextReset)]
    # Every step the first try had begun is told to discard what it showed.
    assert [(e.kind, e.index) for e in resets] == [("step", 1), ("step", 2), ("step", 3)]
    run = events[-1].run
    assert run.status == "ok" and run.calls[0].attempts == 2
    assert run.result.steps[0].content == "The word is s-t-r-a-w-b-e-r-r-y."
    assert len(run.result.steps) == 3 and run.result.raw == [CHAIN]


async def test_a_step_begun_after_the_answer_closes_the_stream(server: FakeServer):
    reply = Reply(CHAIN + "\n" + _runaway(30), chunk_delay=0.005, chunk_words=2)
    run = await _run(server, reply)
    assert run.answer == "3" and len(run.result.steps) == 3
    assert run.calls[0].closed_early and server.requests[0].answered_at is None
    assert any("went on after its answer" in note for note in run.notes)
    assert len(server.requests) == 1


async def test_a_reflect_run_s_markdown_has_each_step_s_reward_and_reflection(
    server: FakeServer,
):
    from llamaberry.store import run_markdown

    run = await _run(server, CHAIN, reflect_every=2)
    markdown = run_markdown(run)
    assert "## Step 2 · reward 0.90 · go on" in markdown
    assert "> Spelling it out makes the count reliable." in markdown
    assert "## Answer · reward 0.95 · go on" in markdown


async def test_a_chain_that_loops_is_stopped_and_asked_for_its_answer(server: FakeServer):
    looping = Reply(
        "<step>Spell the word.</step>\n<step>Count the letters.</step>\n",
        repeat="I keep counting the letters again and again.\n",
    )
    run = await _run(server, looping, "<answer>3</answer>")
    assert run.calls[0].looped and len(server.requests) == 2
    assert "repeat itself" in (server.requests[1].user or "")
    assert run.answer == "3" and run.result.steps[0].content == "Spell the word."


def test_the_cli_says_in_one_line_when_there_is_no_answer(fake_server: FakeServer):
    fake_server.enqueue("<reflection>Not sure.</reflection>")
    env = {"GROQ_API_KEY": "k", "GROQ_BASE_URL": fake_server.groq_base_url}
    result = CliRunner().invoke(cli, ["ask", "q", "--mode", "reflect"], env=env)
    assert result.exit_code == 1
    assert "error: Chain 1 failed: the model gave no answer and no step" in result.output
    assert "Traceback" not in result.output


async def test_a_reasoning_model_s_thinking_goes_with_the_step_it_comes_before(
    server: FakeServer,
):
    from llamaberry import ThinkingDelta

    server.enqueue(Reply(CHAIN, reasoning="Let me spell the word first."))
    thinking: list[tuple[str, int]] = []
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        async for event in engine.stream("reflect", "q"):
            if isinstance(event, ThinkingDelta):
                thinking.append((event.kind, event.index))
            elif isinstance(event, RunFinished):
                run = event.run
    assert thinking and set(thinking) == {("step", 1)}
    assert run.result.steps[0].thinking == "Let me spell the word first."
    assert all("spell the word first" not in s.content for s in run.result.steps)
    assert run.answer == "3"


def test_the_terminal_says_when_the_budget_stopped_the_chain(fake_server: FakeServer):
    fake_server.enqueue(_runaway(20), "<answer>3</answer>")
    env = {"GROQ_API_KEY": "k", "GROQ_BASE_URL": fake_server.groq_base_url}
    result = CliRunner().invoke(
        cli, ["ask", "q", "--mode", "reflect", "--step-budget", "2"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "went past its budget of 2 steps" in result.stdout
    assert "Step 3" not in result.stdout


async def test_read_as_it_streams_a_long_chain_comes_out_as_read_whole(server: FakeServer):
    # Only the end of the reply is read again as it grows; the parts must not differ.
    long_chain = (
        "".join(
            f"<step>Round {n}: one more careful move.</step>\n<count>{40 - n}</count>\n"
            + (
                f"<reflection>Going fine at {n}.</reflection>\nReward: {n % 10}/10\n"
                if n % 3
                else ""
            )
            for n in range(1, 40)
        )
        + "<answer>42</answer>\n<reflection>Done.</reflection><reward>0.8</reward>"
    )
    run = await _run(server, Reply(long_chain, chunk_words=1), step_budget=50)
    whole = read_chain(long_chain)
    got = [(s.content, s.reflection, s.reward_written) for s in run.result.steps]
    assert got == [(p.content, p.reflection, p.reward) for p in whole.steps]
    assert len(got) == 39 and run.answer == "42" and run.result.final.reward == 0.8


async def test_the_budget_comes_from_the_engine_or_the_environment_like_any_option(
    server: FakeServer, monkeypatch
):
    from llamaberry import InputError

    server.reply_with(lambda request: CHAIN)
    monkeypatch.setenv("LLAMABERRY_REFLECT_EVERY", "4")
    async with Engine(
        api_key="k", base_url=server.groq_base_url, history=False, step_budget=7
    ) as engine:
        run = await engine.run("reflect", "q")
        assert run.settings["step_budget"] == 7 and run.settings["reflect_every"] == 4
        assert "budget of 7 steps" in (server.requests[0].system or "")
        monkeypatch.setenv("LLAMABERRY_REFLECT_EVERY", "0")
        try:
            await engine.run("reflect", "q")
        except InputError as error:
            line = str(error)
        else:
            raise AssertionError("a bad LLAMABERRY_REFLECT_EVERY was taken")
    assert line == (
        "reflect_every must be a whole number from 1 to 20 (got 0). "
        "It comes from LLAMABERRY_REFLECT_EVERY."
    )


# -- a model that writes no tags --------------------------------------------------------------

UNTAGGED = (
    "The word strawberry has letters.\n"
    "I think there are two r letters in it because I counted them.\n"
    "So the count is two."
)


async def test_a_reply_without_tags_streams_as_it_is_written(server: FakeServer):
    # What the embedded SmolLM2 does: plain prose, no <step> or label. It used to show
    # nothing until the reply ended (11 s on the tiny model), then the answer.
    server.enqueue(Reply(UNTAGGED, chunk_delay=0.05))
    arrived: list[tuple[float, str]] = []
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        loop = asyncio.get_running_loop()
        async for event in engine.stream("reflect", "How many r's in strawberry?"):
            if isinstance(event, TextDelta) and event.kind == "chain":
                arrived.append((loop.time(), event.text))
            if isinstance(event, RunFinished):
                run, ended = event.run, loop.time()
    assert "".join(text for _, text in arrived) == UNTAGGED
    # Piece by piece, the first well before the reply ended.
    assert len(arrived) > 5
    assert ended - arrived[0][0] > 0.5
    assert run.status == "ok" and run.answer


async def test_a_tagged_reply_does_not_stream_its_raw_tags(server: FakeServer):
    server.enqueue(Reply(CHAIN, chunk_delay=0.01))
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        events = [e async for e in engine.stream("reflect", "How many r's in strawberry?")]
    assert not [e for e in events if isinstance(e, TextDelta) and e.kind == "chain"]
