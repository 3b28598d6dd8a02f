"""The steps (g1) mode end to end: real SDKs, fake server, validated steps, retries, bounds."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from llamaberry import (
    CallFinished,
    CallStarted,
    Engine,
    FinalAnswer,
    InputError,
    RunFailedError,
    RunFinished,
    RunStarted,
    Step,
    TextDelta,
    Usage,
)
from llamaberry.cli import cli
from llamaberry.testing import FakeServer, Fault, RecordedRequest, Reply

QUESTION = 'How many times does the letter r appear in "strawberry"?'


def step_json(number: int, next_action: str = "continue", **extra: object) -> str:
    """A valid step reply, recognisable by its number."""
    return json.dumps(
        {
            "title": f"Title {number}",
            "content": f"Reasoning of step {number}.",
            "next_action": next_action,
            **extra,
        }
    )


class Model:
    """A scripted model: valid steps (the last one at `final_at`), then a plain answer."""

    def __init__(
        self,
        final_at: int | None = 3,
        answer: str = "3",
        reasoning: str | None = None,
        latency: float | None = None,
        usage: dict[str, int] | None = None,
    ) -> None:
        self.final_at = final_at
        self.answer = answer
        self.reasoning = reasoning
        self.latency = latency
        self.usage = usage
        self.steps = 0

    def __call__(self, request: RecordedRequest) -> Reply:
        if not request.json_mode:
            return Reply(self.answer, latency=self.latency, usage=self.usage)
        self.steps += 1
        done = self.final_at is not None and self.steps >= self.final_at
        return Reply(
            step_json(self.steps, "final_answer" if done else "continue"),
            reasoning=self.reasoning,
            latency=self.latency,
            usage=self.usage,
        )


def assistant_steps(request: RecordedRequest) -> list[dict]:
    return [json.loads(m["content"]) for m in request.messages if m["role"] == "assistant"]


# -- JSON mode and the conversation ----------------------------------------------------------


async def test_step_calls_ask_for_json_mode_and_the_final_call_does_not(
    server: FakeServer, engine: Engine
):
    server.reply_with(Model())
    run = await engine.steps(QUESTION)
    assert [r.json_mode for r in server.requests] == [True, True, True, False]
    assert all(r.body["response_format"] == {"type": "json_object"} for r in server.requests[:3])
    assert "response_format" not in server.requests[-1].body
    assert run.mode == "steps"
    assert run.answer == "3"


async def test_each_step_is_appended_to_the_conversation_in_order(
    server: FakeServer, engine: Engine
):
    server.reply_with(Model(final_at=4))
    run = await engine.steps(QUESTION)
    assert [s.index for s in run.steps] == [1, 2, 3, 4]
    assert server.requests[0].user == QUESTION
    for k, request in enumerate(server.requests):
        assert request.messages[1] == {"role": "user", "content": QUESTION}
        assert [s["title"] for s in assistant_steps(request)] == [
            f"Title {i}" for i in range(1, k + 1)
        ]
    assert assistant_steps(server.requests[-1])[2] == {
        "title": "Title 3",
        "content": "Reasoning of step 3.",
        "next_action": "continue",
    }


async def test_reasoning_and_extra_keys_are_never_sent_back(server: FakeServer, engine: Engine):
    model = Model(reasoning="HIDDEN-THOUGHT")
    server.enqueue(Reply(step_json(1, scratch="EXTRA-KEY"), reasoning="HIDDEN-THOUGHT"))
    model.steps = 1
    server.reply_with(model)
    run = await engine.steps(QUESTION)
    assert run.ok
    for request in server.requests:
        sent = json.dumps(request.body)
        assert "HIDDEN-THOUGHT" not in sent and "EXTRA-KEY" not in sent


# -- validation and retries ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("Let me think: {not json", "not valid JSON"),
        ('{"title": "t", "next_action": "continue"}', 'the key "content" is missing'),
        ('{"content": "c", "next_action": "continue"}', 'the key "title" is missing'),
        ('{"title": "t", "content": "c"}', 'the key "next_action" is missing'),
        ('{"title": "  ", "content": "c", "next_action": "continue"}', '"title" is empty'),
        ('{"title": "t", "content": "c", "next_action": "stop"}', '"next_action" must be'),
        ('{"title": 7, "content": "c", "next_action": "continue"}', '"title" must be a string'),
        ('["title", "content"]', "not an object"),
        ("", "it was empty"),
    ],
)
async def test_an_invalid_step_is_asked_for_again_with_the_problem(
    server: FakeServer, engine: Engine, reply: str, problem: str
):
    server.json_validation = False  # let the bad reply reach our own validation
    server.enqueue(reply)
    server.reply_with(Model())
    run = await engine.steps(QUESTION)
    assert run.ok
    first, retry, second = server.requests[:3]
    assert retry.messages[: len(first.messages)] == first.messages
    assert problem in retry.user
    if reply:
        assert retry.messages[-2] == {"role": "assistant", "content": reply}
    assert run.steps[0].attempts == 2 and run.steps[0].title == "Title 1"
    # The rejected reply and its complaint never reach the conversation of later steps.
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant", "user"]
    assert problem not in json.dumps(second.messages)


async def test_a_step_cut_off_by_the_token_budget_says_so(server: FakeServer, engine: Engine):
    server.json_validation = False
    server.enqueue(Reply('{"title": "Counting", "content": "First I', finish_reason="length"))
    server.reply_with(Model())
    run = await engine.steps(QUESTION)
    assert "cut off by the token budget, --max-tokens" in server.requests[1].user
    assert run.steps[0].attempts == 2


async def test_a_fenced_step_is_accepted_as_is(server: FakeServer, engine: Engine):
    server.json_validation = False
    server.enqueue(f"```json\n{step_json(1)}\n```")
    model = Model()
    model.steps = 1
    server.reply_with(model)
    run = await engine.steps(QUESTION)
    assert run.steps[0].attempts == 1 and run.steps[0].title == "Title 1"


async def test_a_server_side_json_rejection_is_asked_for_again(server: FakeServer, engine: Engine):
    # With JSON validation on, the fake server answers 400 json_validate_failed like Groq.
    server.enqueue("I think the answer is 3.")
    server.reply_with(Model())
    run = await engine.steps(QUESTION)
    assert run.ok
    retry = server.requests[1]
    assert retry.messages[-2] == {"role": "assistant", "content": "I think the answer is 3."}
    assert "json_validate_failed" in retry.user
    assert run.steps[0].attempts == 2
    assert len(run.steps) == 3


async def test_a_retry_does_not_announce_a_new_step(server: FakeServer, engine: Engine):
    server.json_validation = False
    server.enqueue("nope", "still nope")
    server.reply_with(Model())
    started = [
        (e.kind, e.index) async for e in engine.steps_stream(QUESTION) if isinstance(e, CallStarted)
    ]
    assert started == [("step", 1), ("step", 2), ("step", 3), ("answer", 1)]
    assert len(server.requests) == 6


async def test_three_bad_replies_fail_the_run_and_keep_the_steps_so_far(
    server: FakeServer, engine: Engine
):
    server.json_validation = False
    # Step 1 recovers from a server-side rejection; step 2 then never becomes valid.
    server.enqueue(
        Fault.status(
            400,
            {"error": {"message": "bad", "code": "json_validate_failed", "failed_generation": "x"}},
        ),
        step_json(1),
        "not json",
        '{"title": "t"}',
        '{"title": "t", "content": "c", "next_action": "maybe"}',
    )
    with pytest.raises(RunFailedError) as caught:
        await engine.steps(QUESTION)
    run = caught.value.run
    assert run.status == "failed"
    assert [s.title for s in run.steps] == ["Title 1"]
    assert len(server.requests) == 5  # no fourth try, and no final call
    assert run.error.startswith(
        "Step 2 failed: the model's reply was not a valid step after 3 tries: "
    )
    assert '"next_action" must be "continue" or "final_answer", not "maybe"' in run.error
    assert "\n" not in run.error
    assert run.answer is None


async def test_three_server_side_rejections_fail_the_run(server: FakeServer, engine: Engine):
    server.enqueue("a", "b", "c")
    with pytest.raises(RunFailedError) as caught:
        await engine.steps(QUESTION)
    assert len(server.requests) == 3
    assert "Step 1 failed" in caught.value.run.error
    assert "json_validate_failed" in caught.value.run.error


async def test_other_provider_errors_are_not_retried_as_bad_steps(
    server: FakeServer, engine: Engine
):
    server.enqueue(step_json(1), step_json(2), Fault.status(400))
    with pytest.raises(RunFailedError) as caught:
        await engine.steps(QUESTION)
    run = caught.value.run
    assert len(server.requests) == 3
    assert [s.index for s in run.steps] == [1, 2]
    assert run.error.startswith("Step 3 failed:")


# -- minimum and maximum steps ---------------------------------------------------------------


async def test_an_early_final_answer_is_answered_with_a_request_to_go_on(
    server: FakeServer, engine: Engine
):
    server.reply_with(Model(final_at=1))
    run = await engine.steps(QUESTION)
    assert len(run.steps) == 3
    assert [s.next_action for s in run.steps] == ["final_answer"] * 3
    for request in server.requests[1:3]:
        assert "at least 3 steps" in request.user
    assert [r.json_mode for r in server.requests] == [True, True, True, False]


async def test_the_minimum_is_configurable(server: FakeServer, engine: Engine):
    server.reply_with(Model(final_at=1))
    run = await engine.steps(QUESTION, min_steps=1)
    assert len(run.steps) == 1
    assert len(server.requests) == 2


async def test_the_step_bound_stops_the_chain_and_asks_for_the_final_answer(
    server: FakeServer, engine: Engine
):
    server.reply_with(Model(final_at=None))
    run = await engine.steps(QUESTION, max_steps=5)
    assert [s.next_action for s in run.steps] == ["continue"] * 5
    assert [r.json_mode for r in server.requests] == [True] * 5 + [False]
    assert run.answer == "3"


async def test_a_model_that_never_says_final_answer_stops_at_the_default_maximum(
    server: FakeServer, engine: Engine
):
    server.reply_with(Model(final_at=None))
    run = await engine.steps(QUESTION)
    assert len(run.steps) == 25
    assert len(server.requests) == 26
    assert run.final is not None


async def test_the_bounds_come_from_the_environment(
    server: FakeServer, provider: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("LLAMABERRY_MIN_STEPS", "2")
    monkeypatch.setenv("LLAMABERRY_MAX_STEPS", "4")
    server.reply_with(Model(final_at=None))
    base_url = server.groq_base_url if provider == "groq" else server.openai_base_url
    async with Engine(provider=provider, api_key="k", base_url=base_url) as engine:
        run = await engine.steps(QUESTION)
    assert len(run.steps) == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_steps": 4, "max_steps": 3}, "min_steps (4) is larger than max_steps (3)"),
        ({"max_steps": 0}, "max_steps must be a whole number from 1 to 100"),
        ({"min_steps": 0}, "min_steps must be a whole number from 1 to 50"),
    ],
)
async def test_impossible_bounds_are_refused_before_any_request(
    server: FakeServer, engine: Engine, options: dict, message: str
):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        engine.steps_stream(QUESTION, **options)
    assert server.requests == []


# -- the final answer ------------------------------------------------------------------------


async def test_the_final_call_asks_for_plain_text_in_the_question_s_format(
    server: FakeServer, engine: Engine
):
    server.reply_with(Model(answer="B"))
    run = await engine.steps("Which is prime? A) 21 B) 23 C) 25. Answer with a letter.")
    final = server.requests[-1]
    instruction = " ".join(final.user.split())
    assert "plain text, not JSON" in instruction
    assert "single letter for multiple choice" in instruction
    # The JSON-only system prompt is gone, so it cannot pull the answer back into JSON.
    assert "JSON object and nothing else" not in " ".join(final.system.split())
    assert "JSON object and nothing else" in " ".join(server.requests[0].system.split())
    assert len(assistant_steps(final)) == 3
    assert final.stream
    assert run.answer == "B"
    assert run.final.content == "B"


async def test_a_final_answer_wrapped_in_json_is_unwrapped(server: FakeServer, engine: Engine):
    server.reply_with(Model(answer='{"final_answer": "B"}'))
    run = await engine.steps(QUESTION)
    assert run.answer == "B"
    assert run.final.content == '{"final_answer": "B"}'


async def test_an_empty_final_answer_fails_with_a_readable_line(server: FakeServer, engine: Engine):
    server.reply_with(Model(answer=""))
    with pytest.raises(RunFailedError) as caught:
        await engine.steps(QUESTION)
    run = caught.value.run
    assert run.error == "Answer failed: the model gave an empty final answer"
    assert len(run.steps) == 3


# -- events, timings and usage ---------------------------------------------------------------


async def test_events_arrive_in_order_and_step_deltas_are_the_step_content(
    server: FakeServer, engine: Engine
):
    server.reply_with(Model())
    shape = []
    texts: dict[tuple[str, int], str] = {}
    results = []
    async for event in engine.steps_stream(QUESTION):
        if isinstance(event, TextDelta):
            key = (event.kind, event.index)
            texts[key] = texts.get(key, "") + event.text
            if shape[-1] != "delta":
                shape.append("delta")
        elif isinstance(event, RunStarted | RunFinished):
            shape.append(event.type)
        else:
            shape.append(f"{event.type}:{event.kind}:{event.index}")
            if isinstance(event, CallFinished):
                results.append(event.result)
    assert shape == [
        "run_started",
        *[
            x
            for i in (1, 2, 3)
            for x in (f"call_started:step:{i}", "delta", f"call_finished:step:{i}")
        ],
        "call_started:answer:1",
        "delta",
        "call_finished:answer:1",
        "run_finished",
    ]
    assert [type(r) for r in results] == [Step, Step, Step, FinalAnswer]
    # Readers get the step's words, never its raw JSON.
    assert texts[("step", 2)] == "Reasoning of step 2."
    assert texts[("answer", 1)] == "3"


async def test_timings_are_recorded_per_step_with_retries_and_for_the_run(
    server: FakeServer, engine: Engine
):
    server.json_validation = False
    server.enqueue(Reply(step_json(1), latency=0.05), Reply("bad", latency=0.05))
    model = Model(latency=0.05)
    model.steps = 1
    server.reply_with(model)
    run = await engine.steps(QUESTION)
    first, second, third = run.steps
    assert first.seconds >= 0.05 and third.seconds >= 0.05
    assert second.attempts == 2 and second.seconds >= 0.10
    assert run.final.seconds >= 0.05
    assert run.seconds >= sum(s.seconds for s in run.steps) + run.final.seconds


async def test_usage_is_recorded_per_step_with_retries_and_summed_for_the_run(
    server: FakeServer, engine: Engine
):
    usage = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
    server.json_validation = False
    server.enqueue(Reply("bad", usage=usage))
    server.reply_with(Model(usage=usage))
    run = await engine.steps(QUESTION)
    one = Usage(**usage)
    assert run.steps[0].usage == one + one
    assert run.steps[1].usage == one and run.steps[2].usage == one
    assert run.final.usage == one
    assert run.usage == Usage(prompt_tokens=500, completion_tokens=50, total_tokens=550)


async def test_each_attempt_is_in_the_call_log(server: FakeServer, engine: Engine):
    server.json_validation = False
    server.enqueue("bad")
    server.reply_with(Model())
    run = await engine.steps(QUESTION)
    assert [(c.kind, c.index) for c in run.calls] == [
        ("step", 1),
        ("step", 1),
        ("step", 2),
        ("step", 3),
        ("answer", 1),
    ]
    assert run.calls[0].reply == "bad"


async def test_engine_stream_runs_steps_by_name(server: FakeServer, engine: Engine):
    server.reply_with(Model())
    run = await engine.run("steps", QUESTION, max_steps=3)
    assert run.mode == "steps" and len(run.steps) == 3


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def cli_env(fake_server: FakeServer) -> dict[str, str]:
    fake_server.reply_with(Model(answer="There are 3."))
    return {"GROQ_API_KEY": "test-key", "GROQ_BASE_URL": fake_server.groq_base_url}


def test_ask_steps_json_has_the_documented_shape(cli_env):
    result = CliRunner().invoke(
        cli, ["ask", QUESTION, "--mode", "steps", "--json"], env=cli_env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["mode"] == "steps"
    assert data["answer"] == "There are 3."
    assert {"answer", "usage", "seconds", "steps"} <= set(data)
    assert [s["index"] for s in data["steps"]] == [1, 2, 3]
    for step in data["steps"]:
        assert {"index", "title", "content", "next_action", "seconds", "usage"} <= set(step)
        assert set(step["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert data["steps"][0]["title"] == "Title 1"
    assert data["steps"][-1]["next_action"] == "final_answer"


def test_ask_steps_shows_each_step_then_the_thinking_time_then_the_answer(cli_env):
    result = CliRunner().invoke(
        cli, ["ask", QUESTION, "--mode", "steps"], env=cli_env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    positions = [out.index(f"Step {i}: Title {i}") for i in (1, 2, 3)]
    assert positions == sorted(positions)
    assert out.index("Reasoning of step 1.") > positions[0]
    assert '"next_action"' not in out  # the steps are shown as prose, not raw JSON
    thinking = out.index("Thinking time:")
    assert re.search(r"Thinking time: \d+(\.\d)?m?s \(3 steps\)", out)
    assert positions[-1] < thinking < out.index("╭─ Answer")
    assert "There are 3." in out[out.index("╭─ Answer") :]


def test_ask_steps_bounds_come_from_the_command_line(cli_env, fake_server: FakeServer):
    fake_server.reply_with(Model(final_at=None))  # never says final_answer
    result = CliRunner().invoke(
        cli,
        ["ask", QUESTION, "--mode", "steps", "--max-steps", "4", "--json"],
        env=cli_env,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["steps"]) == 4
    assert data["settings"]["max_steps"] == 4  # the run records the bound it really used
