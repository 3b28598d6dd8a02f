"""--timeout bounds one call, retries included; --run-timeout bounds the whole run."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner

from llamaberry import Engine, RunFailedError
from llamaberry.cli import cli
from llamaberry.providers.deadline import Deadline
from llamaberry.providers.transport import connect_timeout
from llamaberry.testing import FakeServer, Fault, Reply

from .conftest import FIRST_TURN, refine_script


def engine_for(server: FakeServer, provider: str, **options) -> Engine:
    base_url = server.groq_base_url if provider == "groq" else server.openai_base_url
    return Engine(
        provider=provider, api_key="test-key", base_url=base_url, history=False, **options
    )


async def test_a_hung_server_is_not_asked_again_once_the_timeout_is_spent(server, provider):
    server.reply_with(lambda request: Fault.hang())
    async with engine_for(server, provider, timeout=0.5) as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.single("q")
    run = failure.value.run
    assert run.error_kind == "timeout"
    assert "within 0.5s" in run.error and "retries included" in run.error
    # Before, each of the four attempts waited the whole timeout again.
    assert len(server.requests) == 1


async def test_a_slow_drip_stream_is_stopped_at_the_timeout(server, provider):
    # Twenty tokens 0.2 s apart: four seconds of reply, none of the gaps longer than 0.2 s.
    server.reply_with(lambda request: Reply(" ".join(["tok"] * 20), chunk_delay=0.2))
    async with engine_for(server, provider, timeout=0.5) as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.single("q")
    run = failure.value.run
    assert run.error_kind == "timeout"
    assert len(server.requests) == 1
    assert "tok" in run.calls[0].reply  # what streamed before the bound is kept


async def test_a_retry_that_fits_in_the_timeout_still_happens(server, provider):
    server.enqueue(Fault.status(503), "fine")
    async with engine_for(server, provider, timeout=30) as engine:
        run = await engine.single("q")
    assert run.answer == "fine" and len(server.requests) == 2


async def test_the_run_timeout_stops_a_run_and_keeps_what_finished(server, provider):
    # Every call takes about 0.8 s; three turns and a synthesis cannot fit in 2 s.
    server.reply_with(lambda request: Reply(refine_script(request), chunk_delay=0.1, chunk_words=8))
    async with engine_for(server, provider, run_timeout=2.0) as engine:
        with pytest.raises(RunFailedError) as failure:
            await engine.refine("q", turns=3)
    run = failure.value.run
    assert run.status == "failed" and run.error_kind == "timeout"
    assert "--run-timeout" in run.error
    assert len(run.result.turns) >= 1
    assert run.result.turns[0].content.startswith(FIRST_TURN[:20])
    assert run.result.synthesis is None
    assert "CancelledError" not in run.model_dump_json()


def test_the_cli_takes_run_timeout_from_the_option_and_the_environment(fake_server):
    fake_server.reply_with(lambda request: Reply("slow " * 40, chunk_delay=0.1))
    env = {"GROQ_API_KEY": "test-key", "GROQ_BASE_URL": fake_server.groq_base_url}
    by_option = CliRunner().invoke(
        cli, ["ask", "q", "--mode", "single", "--run-timeout", "0.5"], env=env
    )
    by_variable = CliRunner().invoke(
        cli, ["ask", "q", "--mode", "single"], env={**env, "LLAMABERRY_RUN_TIMEOUT": "0.5"}
    )
    for result in (by_option, by_variable):
        assert result.exit_code == 1
        assert "(--run-timeout)" in result.stderr


async def test_a_cancel_from_elsewhere_inside_a_deadline_stays_a_cancel():
    bound = Deadline(asyncio.get_running_loop().time() + 10)

    async def waits() -> None:
        with bound:
            await asyncio.sleep(5)

    task = asyncio.create_task(waits())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    bound.cancel()


async def test_a_deadline_that_passes_during_an_await_raises_timeout_and_stays_expired():
    bound = Deadline(asyncio.get_running_loop().time() + 0.05)
    with pytest.raises(TimeoutError), bound:
        await asyncio.sleep(5)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # nothing left pending on the task
    with pytest.raises(TimeoutError), bound:  # once passed, the next await is stopped at once
        await asyncio.sleep(5)


async def test_a_run_bound_that_passes_while_the_consumer_holds_an_event_stops_the_call(
    server, provider
):
    # The consumer dwells 1.2 s on the first piece, so the run's 1 s bound passes while it
    # holds it; the next piece is 0.3 s away. The call then under way is the one stopped.
    server.reply_with(lambda request: Reply(" ".join(["tok"] * 8), chunk_delay=0.3))
    async with engine_for(server, provider, run_timeout=1.0) as engine:
        run, held = None, False
        async for event in engine.single_stream("q"):
            if event.type == "text_delta" and not held:
                held = True
                await asyncio.sleep(1.2)
            if event.type == "run_finished":
                run = event.run
    assert run is not None and run.status == "failed" and run.error_kind == "timeout"
    assert run.error.startswith("Answer failed: the run took longer than its 1s bound")
    assert run.calls[0].reply.startswith("tok")


def test_the_connect_timeout_grows_with_the_calls_in_flight_up_to_the_call_timeout():
    # A lone call to a host that never answers still fails its connect in 10 s; a burst of a
    # thousand connects from one event loop gets the time one loop needs to open them.
    assert connect_timeout(1, 120.0) == 10.0
    assert connect_timeout(1000, 120.0) == pytest.approx(10.0 + 0.05 * 999)
    assert connect_timeout(5000, 120.0) == 120.0
    assert connect_timeout(1, 3.0) == 3.0


async def test_a_passed_deadline_stops_the_next_pausing_await_as_a_timeout_after_ones_that_did_not():
    # The deadline passes while the caller holds an item. The next await finds its item at hand
    # and never pauses; the one after pauses, and is stopped once, as a timeout, not a cancel.
    deadline = Deadline(asyncio.get_running_loop().time() + 0.05)
    await asyncio.sleep(0.1)

    async def at_hand() -> int:
        return 1

    with deadline:
        assert await at_hand() == 1
    with pytest.raises(TimeoutError), deadline:
        await asyncio.sleep(5)
    deadline.cancel()
