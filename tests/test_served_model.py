"""What really ran and how long it really took: servers that serve one model whatever id they
are asked (llama.cpp), and servers that queue requests beyond their slots."""

from __future__ import annotations

import asyncio
import json
import logging
import statistics

import pytest
from click.testing import CliRunner

from llamaberry import Engine
from llamaberry.cli import cli
from llamaberry.eval import default_concurrency, evaluate, load_dataset
from llamaberry.store import Store
from llamaberry.testing import FakeServer

GGUF = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"


def local_engine(server: FakeServer, model: str = "gpt-7", **options) -> Engine:
    """An engine on the fake server as a local OpenAI-compatible endpoint."""
    return Engine(
        provider="openai", base_url=server.openai_base_url, model=model, turns=1, **options
    )


def dataset(tmp_path, count: int):
    path = tmp_path / "data.jsonl"
    lines = [
        json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return load_dataset(path)


def answer_sums(request) -> str:
    """Answer 'What is N + 1?' right."""
    number = int((request.user or "0").split()[2])
    return f"The answer is {number + 1}."


# -- item 5: the model that really answered ---------------------------------------------------


async def test_a_single_model_server_answers_any_id_and_the_run_records_what_served_it():
    async with (
        FakeServer(served_model=GGUF) as server,
        local_engine(server, history=False) as engine,
    ):
        run = await engine.single("q")
    assert run.model == "gpt-7"
    assert run.served_model == GGUF
    assert run.public_dict()["served_model"] == GGUF


async def test_an_id_the_endpoint_does_not_list_gets_one_warning_naming_what_answered(caplog):
    caplog.set_level(logging.WARNING, logger="llamaberry")
    async with (
        FakeServer(served_model=GGUF) as server,
        local_engine(server, history=False) as engine,
    ):
        await engine.single("q")
        await engine.single("q")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'gpt-7'" in warnings[0] and GGUF in warnings[0]


async def test_a_listed_id_gets_no_warning_and_no_extra_request(caplog):
    caplog.set_level(logging.WARNING, logger="llamaberry")
    async with FakeServer(served_model=GGUF) as server:
        async with local_engine(server, model=GGUF, history=False) as engine:
            run = await engine.single("q")
        assert [r.path for r in server.requests] == ["/v1/chat/completions"]
    assert run.served_model == GGUF
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


async def test_listing_the_models_does_not_stop_a_single_model_server_answering_an_unlisted_id():
    # The web UI lists models before a run; llama.cpp then still answers "gpt-7".
    async with (
        FakeServer(served_model=GGUF) as server,
        local_engine(server, history=False) as engine,
    ):
        assert await engine.models() == [GGUF]
        run = await engine.single("q")
    assert run.ok and run.served_model == GGUF


def test_the_terminal_warns_and_names_the_model_that_served(fake_server: FakeServer):
    fake_server.served_model = GGUF
    fake_server.models = [GGUF]
    fake_server.enqueue("42")
    result = CliRunner().invoke(
        cli,
        ["ask", "q", "--mode", "single", "--provider", "openai", "--model", "gpt-7"],
        env={"OPENAI_BASE_URL": fake_server.openai_base_url, "LLAMABERRY_HISTORY": "0"},
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: the endpoint does not list the model 'gpt-7'")
    # Before the streamed reply, not in the middle of its line.
    assert result.output.index("warning:") < result.output.index("42")
    assert f"gpt-7 (served as {GGUF})" in result.stdout


async def test_eval_resume_asks_again_after_the_server_changed_its_model(tmp_path):
    data = dataset(tmp_path, 3)
    store = Store(tmp_path / "history.db")
    async with FakeServer(served_model="model-a.gguf", default=answer_sums) as server:
        async with local_engine(server, history=store) as engine:
            first = await evaluate(engine, data, ("single",))
        # The server is restarted on another model at the same address; the asked id is the same.
        server.served_model, server.models = "model-b.gguf", ["model-b.gguf"]
        async with local_engine(server, history=store) as engine:
            second = await evaluate(engine, data, ("single",))
        async with local_engine(server, history=store) as engine:
            third = await evaluate(engine, data, ("single",))
    assert [r.reused for r in first.results] == [False] * 3
    assert [r.reused for r in second.results] == [False] * 3
    assert {store.get(r.run_id).served_model for r in second.results} == {"model-b.gguf"}
    assert [r.reused for r in third.results] == [True] * 3


# -- item 6: queueing at the server is not the mode's time ------------------------------------


async def test_eval_seconds_leave_out_the_time_spent_queueing_for_a_slot(tmp_path):
    data = dataset(tmp_path, 4)
    # One slot, 0.3 s per reply, four at once: the k-th reply waits at least 0.3*k s in line.
    async with (
        FakeServer(served_model=GGUF, slots=1, latency=0.3, default=answer_sums) as server,
        local_engine(server, history=False) as engine,
    ):
        report = await evaluate(engine, data, ("single",), concurrency=4)
    queued = [r.queued_seconds for r in report.results]
    assert sum(queued) >= 0.3 * (0 + 1 + 2 + 3) - 0.05
    [summary] = report.summaries
    assert summary.mean_seconds == pytest.approx(statistics.mean(r.seconds for r in report.results))
    store_free = [r.seconds for r in report.results]
    assert all(seconds >= 0.3 - 0.01 for seconds in store_free)  # the work itself still counts


async def test_a_run_reports_its_queueing_apart_from_its_seconds():
    async with (
        FakeServer(served_model=GGUF, slots=1, latency=0.3) as server,
        local_engine(server, history=False) as engine,
    ):
        runs = await asyncio.gather(engine.single("a"), engine.single("b"))
    waited = max(runs, key=lambda run: run.queued_seconds)
    assert waited.queued_seconds >= 0.3 - 0.02
    assert waited.calls[0].queued_seconds == waited.queued_seconds
    assert waited.queued_seconds < waited.seconds


async def test_a_server_without_timings_reports_no_queueing(server: FakeServer):
    async with local_engine(server, model="openai/gpt-oss-120b", history=False) as engine:
        run = await engine.single("q")
    assert run.calls[0].queued_seconds is None and run.queued_seconds == 0.0


async def test_eval_concurrency_defaults_to_the_servers_slots(tmp_path):
    in_flight = peak = 0

    async def counting(request):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.1)
        in_flight -= 1
        return answer_sums(request)

    async with (
        FakeServer(served_model=GGUF, slots=2, default=counting) as server,
        local_engine(server, history=False) as engine,
    ):
        assert await default_concurrency(engine) == 2
        await evaluate(engine, dataset(tmp_path, 6), ("single",))
    assert peak <= 2


async def test_eval_concurrency_stays_four_where_the_endpoint_does_not_say(server: FakeServer):
    async with local_engine(server, model="openai/gpt-oss-120b", history=False) as engine:
        assert await default_concurrency(engine) == 4
    groq = Engine(api_key="k", base_url=server.groq_base_url, history=False)
    async with groq:
        assert await default_concurrency(groq) == 4
    assert not [r for r in server.requests if r.path == "/props" and r.provider == "groq"]
