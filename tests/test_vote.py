"""The vote mode: independent samples sent at once, read with the scorer's rules, majority wins."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from click.testing import CliRunner

from llamaberry import Engine, InputError
from llamaberry.cli import cli
from llamaberry.core.errors import RunFailedError
from llamaberry.modes.vote import Sample, read_answer, tally
from llamaberry.testing import FakeServer, RecordedRequest, Reply

from .conftest import together


def gated(server: FakeServer, answers: list[str]):
    """A handler that holds every request until `len(answers)` have arrived (or 10 s pass),
    then answers the k-th to arrive with `answers[k]`: sent one after another, they could
    never all be in flight together."""
    return together(len(answers), lambda request, k: f"Working it out.\n\nAnswer: {answers[k - 1]}")


async def test_the_samples_are_in_flight_together_and_the_majority_wins(server: FakeServer):
    server.reply_with(gated(server, ["42", "41", "42", "forty-two", "41"]))
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        run = await engine.run("vote", "What is six times seven?")
    requests = server.requests
    assert len(requests) == 5
    # Every request arrived before any was answered: the five overlapped.
    assert max(r.received_at for r in requests) < min(r.answered_at or 0 for r in requests)
    assert run.status == "ok" and run.answer == "42"
    result = run.result
    assert result.votes == {"42": 3, "41": 2}  # "forty-two" counts as 42
    assert result.agreement == pytest.approx(0.6)
    assert sorted(s.index for s in result.samples) == [1, 2, 3, 4, 5]
    assert all(s.usage.total_tokens > 0 and s.seconds > 0 for s in result.samples)
    assert sorted(s.finished for s in result.samples) == [1, 2, 3, 4, 5]
    # With no temperature given, samples are drawn above zero so they can differ.
    assert {r.body.get("temperature") for r in requests} == {0.8}
    assert all("Answer: <your final answer>" in (r.system or "") for r in requests)


async def test_a_given_temperature_is_kept_and_samples_is_the_mode_s_option(server: FakeServer):
    server.reply_with(gated(server, ["B", "(B)", "C"]))
    async with Engine(
        api_key="k", base_url=server.groq_base_url, history=False, temperature=0.3
    ) as engine:
        run = await engine.run("vote", "Which is prime? A) 21 B) 23 C) 25", samples=3)
    assert len(server.requests) == 3
    assert {r.body.get("temperature") for r in server.requests} == {0.3}
    assert run.answer == "B" and run.result.votes == {"B": 2, "C": 1}
    assert run.settings["samples"] == 3


def test_answers_are_read_with_the_scorer_s_rules():
    assert read_answer("so\n\nAnswer: 1,000")[1] == read_answer("Answer: 1000.0")[1]
    assert read_answer("Answer: **B**")[1] == read_answer("Answer: (B)")[1] == "choice:B"
    assert read_answer("Answer: Yes.")[1] == "choice:yes"
    assert read_answer("Answer: Paris")[1] == read_answer("Answer: paris.")[1] == "text:paris"
    assert read_answer("") is None


def _sample(index: int, answer: str | None, finished: int) -> Sample:
    found = read_answer(f"Answer: {answer}") if answer else None
    return Sample(
        index=index,
        answer=found[0] if found else None,
        key=found[1] if found else None,
        finished=finished,
    )


def test_a_tie_goes_to_the_answer_that_reached_the_top_count_first():
    # Finishing order: 41, 42, 42, 41 -> 42 reaches two votes (3rd to finish) before 41 (4th).
    samples = [_sample(1, "41", 1), _sample(2, "42", 2), _sample(3, "42", 3), _sample(4, "41", 4)]
    votes, winner, agreement = tally(samples)
    assert winner == "42" and votes == {"42": 2, "41": 2} and agreement == 0.5
    # One vote each: the earliest-finishing sample's answer, whatever its index.
    votes, winner, _ = tally([_sample(1, "7", 3), _sample(2, "8", 1), _sample(3, "9", 2)])
    assert winner == "8" and list(votes) == ["8", "9", "7"]


def test_samples_without_a_readable_answer_do_not_count_toward_agreement():
    _votes, winner, agreement = tally([_sample(1, "5", 1), _sample(2, None, 2), _sample(3, "6", 3)])
    assert winner == "5" and agreement == 0.5
    assert tally([_sample(1, None, 1)]) == ({}, None, None)


def test_a_bad_samples_value_gives_the_same_one_line_as_other_options(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
):
    line = "samples must be a whole number from 1 to 20 (got 0)."
    with pytest.raises(InputError) as api:
        Engine(api_key="k", base_url=fake_server.groq_base_url, history=False).stream(
            "vote", "q", samples=0
        )
    env = {"GROQ_API_KEY": "k", "GROQ_BASE_URL": fake_server.groq_base_url}
    command = CliRunner().invoke(cli, ["ask", "q", "--mode", "vote", "--samples", "0"], env=env)
    monkeypatch.setenv("LLAMABERRY_SAMPLES", "0")
    with pytest.raises(InputError) as environment:
        Engine(api_key="k", base_url=fake_server.groq_base_url, history=False)
    assert str(api.value) == line
    assert command.exit_code == 2 and command.stderr == f"error: {line}\n"
    assert str(environment.value) == f"{line} It comes from LLAMABERRY_SAMPLES."
    assert fake_server.requests == []


async def test_a_failing_sample_cancels_the_others_and_the_run_says_which(server: FakeServer):
    from llamaberry.testing import Fault

    count = 0

    async def handler(request: RecordedRequest):
        nonlocal count
        count += 1
        if count == 1:
            return Fault.status(400)
        await asyncio.sleep(30)  # never answers in time: cancelled when the first fails
        return "Answer: 1"

    server.reply_with(handler)
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        with pytest.raises(RunFailedError) as failure:
            await asyncio.wait_for(engine.run("vote", "q", samples=3), 20)
    run = failure.value.run
    assert run.status == "failed"
    assert run.error is not None and run.error.startswith("Sample ")
    assert "CancelledError" not in run.error
    assert sum(1 for c in run.calls if c.error == "CancelledError") == 2


def test_the_terminal_shows_each_sample_whole_not_interleaved(fake_server: FakeServer):
    fake_server.reply_with(
        lambda request: Reply("Working it out step by step.\n\nAnswer: 42", chunk_delay=0.01)
    )
    env = {"GROQ_API_KEY": "k", "GROQ_BASE_URL": fake_server.groq_base_url}
    result = CliRunner().invoke(
        cli, ["ask", "q", "--mode", "vote", "--samples", "3"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    # Each sample's words arrive one chunk at a time, all three at once; each is shown intact.
    assert result.stdout.count("Working it out step by step.\n\nAnswer: 42") == 3
    for index in (1, 2, 3):
        assert f"Sample {index}" in result.stdout


def test_the_terminal_shows_each_sample_s_thinking_whole_before_its_reply(
    fake_server: FakeServer,
):
    arrivals = itertools.count(1)

    def thinking(request: RecordedRequest) -> Reply:
        k = next(arrivals)
        thought = f"thought {k}: " + " ".join(f"w{k}.{n}" for n in range(12))
        return Reply(f"Reply {k}.\n\nAnswer: 42", reasoning=thought, chunk_delay=0.01)

    fake_server.reply_with(thinking)
    env = {"GROQ_API_KEY": "k", "GROQ_BASE_URL": fake_server.groq_base_url}
    result = CliRunner().invoke(
        cli, ["ask", "q", "--mode", "vote", "--samples", "3"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    # Streamed at the same time, each sample's thinking is still shown in one piece, then a
    # blank line and that sample's own reply.
    for k in (1, 2, 3):
        thought = f"thought {k}: " + " ".join(f"w{k}.{n}" for n in range(12))
        assert f"{thought}\n\nReply {k}.\n\nAnswer: 42" in result.stdout


async def test_serve_sends_each_sample_whole_as_reasoning_and_the_winner_as_content(
    server: FakeServer,
):
    from .test_serve import joined, start_endpoint, stream_parts

    answers = iter(["42", "41", "42"])
    server.reply_with(
        lambda request: Reply(
            f"Working it out step by step.\n\nAnswer: {next(answers)}", chunk_delay=0.01
        )
    )
    async for endpoint in start_endpoint(server):
        parts, _ = await stream_parts(endpoint.client, "vote", extra_body={"samples": 3})
    reasoning = joined(parts, "reasoning")
    for index in (1, 2, 3):
        assert f"### Sample {index}" in reasoning
    assert reasoning.count("Working it out step by step.\n\nAnswer: 4") == 3
    assert joined(parts, "content") == "42"


async def test_closing_the_stream_cancels_every_sample_in_flight(server: FakeServer):
    from llamaberry.core.events import TextDelta

    server.reply_with(lambda request: Reply("slow " * 200 + "\nAnswer: 1", chunk_delay=0.05))
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        stream = engine.stream("vote", "q", samples=3)
        async for event in stream:
            if isinstance(event, TextDelta):
                break
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.2)
    # All three were sent, none was read to its end, and no sample's task outlives the run.
    assert len(server.requests) == 3
    assert all(r.answered_at is None for r in server.requests)
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not [t for t in pending if "pump" in repr(t.get_coro())]
