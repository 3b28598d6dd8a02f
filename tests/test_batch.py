"""`eval --batch`: the eval's calls through the Batch API, one batch per round, through the real
SDKs' own `files` and `batches` calls into the fake server's Batch API."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from llamaberry import Engine
from llamaberry.cli import cli
from llamaberry.cli.render import TerminalView
from llamaberry.core import providers as table
from llamaberry.core.events import RunFinished
from llamaberry.core.prices import dollars
from llamaberry.eval import Report, evaluate, load_dataset, report_markdown, write_results
from llamaberry.eval.batch import (
    BatchClient,
    Batcher,
    NoBatchAPIError,
    import_outputs,
    no_batch_api,
)
from llamaberry.providers import make_client
from llamaberry.store import Store
from llamaberry.store.batches import BatchLedger
from llamaberry.testing import FakeServer, RecordedRequest

from .conftest import sums

QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?")


def sums_script(request: RecordedRequest) -> str:
    """Refine's sections and single's plain reply for "What is i + i?": right, except for
    every fifth item, which every call gets wrong the same way."""
    found = QUESTION.search(" ".join(m.get("content") or "" for m in request.messages))
    assert found is not None
    i = int(found.group(1))
    answer = 2 * i + (1 if i % 5 == 0 else 0)
    system = request.system or ""
    if "## Concise Answer" in system:
        return (
            "## Analysis of Turns\nThey agree.\n\n## Comparison\nSame.\n\n## Final Reasoning\n"
            f"1. Add.\n**Explanation:** Sum.\n\n## Comprehensive Final Answer\n{answer}\n\n"
            f"## Concise Answer\nThe sum is {answer}."
        )
    if "## Critique" in system:
        return (
            "## Critique\nFine.\n\n## New Reasoning\n1. Add again.\n**Explanation:** Same.\n\n"
            f"## Updated Answer\n{answer}"
        )
    if "## Reasoning" in system:
        return f"## Reasoning\n1. Add.\n**Explanation:** Sum.\n\n## Answer\n{answer}"
    return f"The answer is {answer}."


def engine_on(server: FakeServer, provider: str = "openai") -> Engine:
    base = server.openai_base_url if provider == "openai" else server.groq_base_url
    return Engine(provider=provider, api_key="test-key", base_url=base, history=False)


def batched(engine: Engine, ledger: BatchLedger, **options) -> Batcher:
    batcher = Batcher(ledger=ledger, backend=engine.client.sdk, poll=0.02, **options)
    engine.client = BatchClient(engine.client, batcher)
    return batcher


def uploads(server: FakeServer) -> int:
    return sum(r.path.endswith("/files") and r.method == "POST" for r in server.requests)


def creations(server: FakeServer) -> int:
    return sum(r.path.endswith("/batches") and r.method == "POST" for r in server.requests)


@pytest.mark.parametrize("provider", ["openai", "groq"])
async def test_a_batch_eval_scores_as_the_synchronous_one_in_one_batch_per_round(
    tmp_path: Path, provider: str
):
    data = load_dataset(str(sums(tmp_path / "sums.jsonl", 200)))
    async with FakeServer() as server:
        server.reply_with(sums_script)
        async with engine_on(server, provider) as engine:
            plain = await evaluate(
                engine, data, ["single", "refine"], store=Store(tmp_path / "plain.db")
            )
        sync_requests = len(server.requests)
        server.reset()
        server.reply_with(sums_script)
        async with engine_on(server, provider) as engine:
            batcher = batched(engine, BatchLedger("test", tmp_path / "batch.db"))
            batch = await evaluate(
                engine,
                data,
                ["single", "refine"],
                store=Store(tmp_path / "batch.db"),
                batcher=batcher,
            )
        batch_requests = len(server.requests)

    def answers(report):
        return {(r.item, r.mode): (r.answer, r.correct) for r in report.results}

    assert answers(batch) == answers(plain)
    assert [s.accuracy for s in batch.summaries] == [s.accuracy for s in plain.summaries]
    assert all(r.batch for r in batch.results) and not any(r.batch for r in plain.results)
    # Refine's three turns and its synthesis: four rounds, single's call in the first. One file
    # and one batch per round, never one per item.
    assert batcher.rounds == 4
    assert uploads(server) == creations(server) == batcher.batches_created == 4
    assert len(server.batch_requests) == 200 * (1 + 4)
    # The same requests went out, un-streamed: each line's messages are a synchronous call's.
    assert batch_requests < sync_requests / 20
    assert "Batch API in 4 round(s)" in (batch.batch or "")


async def test_each_line_carries_what_the_synchronous_call_sends(tmp_path: Path):
    data = load_dataset(str(sums(tmp_path / "sums.jsonl", 3)))
    async with FakeServer() as server:
        server.reply_with(sums_script)
        async with engine_on(server) as engine:
            await evaluate(engine, data, ["refine"], store=Store(tmp_path / "a.db"))
        sent = sorted(
            json.dumps(r.messages, sort_keys=True)
            for r in server.requests
            if r.path.endswith("/completions")
        )
        streamed = [r.body for r in server.requests if r.path.endswith("/completions")]
        server.reset()
        server.reply_with(sums_script)
        async with engine_on(server) as engine:
            batcher = batched(engine, BatchLedger("t", tmp_path / "b.db"))
            await evaluate(
                engine, data, ["refine"], store=Store(tmp_path / "b.db"), batcher=batcher
            )
        lines = server.batch_requests
    assert sorted(json.dumps(r.messages, sort_keys=True) for r in lines) == sent
    # Everything but the streaming switches is the same body.
    strip = {"stream", "stream_options"}
    assert {k for k in streamed[0] if k not in strip} == set(lines[0].body)


async def test_an_interrupted_batch_eval_resumes_without_sending_anything_twice(tmp_path: Path):
    data = load_dataset(str(sums(tmp_path / "sums.jsonl", 20)))
    history, ledger_path = tmp_path / "h.db", tmp_path / "h.db"
    async with FakeServer() as server:
        server.reply_with(sums_script)
        server.batches.delay = 0.3
        async with engine_on(server) as engine:
            batcher = batched(engine, BatchLedger("t", ledger_path))
            task = asyncio.create_task(
                evaluate(engine, data, ["single", "refine"], store=Store(history), batcher=batcher)
            )
            # Killed while round 3's batch is in progress (created, not yet done).
            while creations(server) < 3:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        before = (uploads(server), creations(server), len(server.batch_requests))
        assert before[:2] == (3, 3)

        async with engine_on(server) as engine:
            batcher = batched(engine, BatchLedger("t", ledger_path))
            report = await evaluate(
                engine, data, ["single", "refine"], store=Store(history), batcher=batcher
            )
    # Rounds 1 to 3 were not sent again; only the synthesis round is new.
    assert (uploads(server), creations(server)) == (4, 4)
    assert batcher.files_uploaded == batcher.batches_created == 1
    assert len(server.batch_requests) == 20 * 5  # every line answered once, over both runs
    assert max(server.batches.answered.values()) == 1
    assert all(r.status == "ok" for r in report.results)


async def test_failed_and_expired_lines_go_again_next_round_then_fail_the_run(tmp_path: Path):
    data = load_dataset(str(sums(tmp_path / "sums.jsonl", 4)))
    async with FakeServer() as server:
        server.reply_with(sums_script)
        async with engine_on(server) as engine:
            batcher = batched(engine, BatchLedger("t", tmp_path / "h.db"))
            ledger_ids: dict[str, str] = {}

            async def fail_first_lines():
                # Once round 1's file is in, its first line fails and its second expires, for
                # good: both are retried, then their runs fail with the provider's words.
                while not server.batches.files:
                    await asyncio.sleep(0.005)
                content = next(iter(server.batches.files.values())).content.splitlines()
                ids = [json.loads(line)["custom_id"] for line in content]
                ledger_ids["failed"], ledger_ids["expired"] = ids[0], ids[1]
                server.batches.fail_lines.add(ids[0])
                server.batches.expire_lines.add(ids[1])

            watcher = asyncio.create_task(fail_first_lines())
            server.batches.delay = 0.05
            report = await evaluate(
                engine, data, ["single"], store=Store(tmp_path / "h.db"), batcher=batcher
            )
            await watcher
    failed = [r for r in report.results if r.status == "failed"]
    assert len(failed) == 2
    assert any("told to fail" in (r.error or "") for r in failed)
    assert any("expired" in (r.error or "") for r in failed)
    assert server.batches.answered[ledger_ids["failed"]] == 3  # MAX_TRIES
    assert sum(r.status == "ok" for r in report.results) == 2


async def test_a_rejected_batch_file_shows_the_providers_first_errors_with_lines(tmp_path: Path):
    data = load_dataset(str(sums(tmp_path / "sums.jsonl", 2)))
    async with FakeServer() as server:
        server.reply_with(sums_script)
        server.batches.reject = [
            {"line": 2, "message": "max_completion_tokens is too large", "code": "invalid"},
        ]
        async with engine_on(server) as engine:
            batcher = batched(engine, BatchLedger("t", tmp_path / "h.db"))
            report = await evaluate(
                engine, data, ["single"], store=Store(tmp_path / "h.db"), batcher=batcher
            )
    assert [r.status for r in report.results] == ["failed", "failed"]
    for result in report.results:
        assert (result.error or "").endswith(
            "The provider rejected the batch file: line 2: max_completion_tokens is too large"
        )


async def test_an_endpoint_without_a_batch_api_is_one_line_before_anything_is_sent(
    tmp_path: Path,
):
    async with FakeServer(flavor="llamacpp") as server:
        base = server.openai_base_url
        async with Engine(provider="openai", api_key="k", base_url=base, history=False) as engine:
            batcher = Batcher(ledger=BatchLedger("t", tmp_path / "h.db"), backend=engine.client.sdk)
            with pytest.raises(NoBatchAPIError, match="no Batch API"):
                await batcher.check()
        assert not any(r.path.endswith("/completions") for r in server.requests)


def test_cli_eval_batch_writes_the_report_and_says_the_rounds(
    fake_server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fake_server.reply_with(sums_script)
    monkeypatch.setenv("GROQ_BASE_URL", fake_server.groq_base_url)
    monkeypatch.setenv("GROQ_API_KEY", "test-key")
    data = sums(tmp_path / "sums.jsonl", 6)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["eval", str(data), "--modes", "single,refine", "--batch", "--batch-poll", "0.05",
         "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "round 4:" in result.output
    report = (out / "report.md").read_text()
    assert "Batch API in 4 round(s)" in report
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert rows and all(row["batch"] for row in rows)


def test_cli_eval_batch_on_the_embedded_model_is_one_line(tmp_path: Path):
    data = sums(tmp_path / "sums.jsonl", 2)
    result = CliRunner().invoke(cli, ["eval", str(data), "--batch", "--provider", "local"])
    assert result.exit_code != 0
    assert "no Batch API" in result.output
    assert "Traceback" not in result.output


def test_eval_batch_on_a_row_without_a_batch_api_stops_before_anything_starts(tmp_path: Path):
    # The local row says it has no Batch API (`batch_api`): one line, exit 2, before the data
    # is read or a model loads. It used to start llama.cpp, load the model and ask it
    # GET /v1/batches, and on the 404 point at `batch export` for vLLM.
    assert [row.name for row in table.ROWS if not row.batch_api] == ["local"]
    data, out = sums(tmp_path / "sums.jsonl", 2), tmp_path / "out"
    code = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from llamaberry.cli import cli\n"
        "for args in (['--provider', 'local'], []):  # named, and the keyless default\n"
        f"    r = CliRunner().invoke(cli, ['eval', {str(data)!r}, '--batch', '-o', {str(out)!r},"
        " *args])\n"
        "    print(json.dumps([r.exit_code, r.output, type(r.exception).__name__]))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('xllamacpp', 'openai',"
        " 'llamaberry.providers.local')))))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GROQ_", "OPENAI_"))}
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert ran.returncode == 0, ran.stderr
    *runs, loaded = [json.loads(line) for line in ran.stdout.splitlines()]
    for exit_code, output, exception in runs:
        assert (exit_code, exception) == (2, "SystemExit")
        assert output == f"error: {no_batch_api('local')}\n"
        assert "Traceback" not in output
    assert loaded == []  # no model, no SDK
    assert not out.exists()


async def test_a_batch_client_sends_only_where_the_row_has_a_batch_api(tmp_path: Path):
    ledger = BatchLedger("t", tmp_path / "h.db")
    async with FakeServer() as server:
        async with engine_on(server) as hosted:
            backend = hosted.client.sdk
            async with Engine(provider="local", history=False) as engine:
                with pytest.raises(NoBatchAPIError) as refused:
                    BatchClient(engine.client, Batcher(ledger=ledger, backend=backend))
                assert str(refused.value) == no_batch_api("local")
                # Writing a round to a file sends nothing anywhere: any row may.
                BatchClient(engine.client, Batcher(ledger=ledger, backend=None))
                assert engine.client.server is None  # llama.cpp was never started
        for row in (r for r in table.ROWS if r.batch_api):  # groq, openai
            async with engine_on(server, row.name) as engine:
                BatchClient(engine.client, Batcher(ledger=ledger, backend=backend))
        assert server.requests == []


def priced_on(server: FakeServer, model: str) -> Engine:
    """An engine on Groq by name (priced by genai-prices' Groq table, as a run on Groq's own
    API is) whose client's SDK is pointed at the fake server."""
    client = make_client("groq", model=model, api_key="test-key", base_url=server.groq_base_url)
    return Engine(provider="groq", api_key="test-key", model=model, history=False, client=client)


async def priced_eval(
    tmp_path: Path, model: str, batch: bool, store: Store | None = None
) -> Report:
    tmp_path.mkdir()
    data = load_dataset(str(sums(tmp_path / "sums.jsonl", 3)))
    async with FakeServer() as server:
        server.reply_with(sums_script)
        async with priced_on(server, model) as engine:
            ledger = BatchLedger("t", tmp_path / f"{batch}.db")
            batcher = batched(engine, ledger) if batch else None
            store = store or Store(tmp_path / f"{batch}.db")
            return await evaluate(engine, data, ["single"], store=store, batcher=batcher)


async def test_a_batch_eval_without_batch_rates_says_its_cost_is_at_list_price(tmp_path: Path):
    # genai-prices has no Batch API rate for this Groq model: the batch eval's cost is the list
    # price, said so in its cost, its note and results.jsonl, never a discount of our own.
    model = "llama-3.1-8b-instant"
    plain = await priced_eval(tmp_path / "a", model, batch=False)
    batch = await priced_eval(tmp_path / "b", model, batch=True)
    assert [r.cost for r in batch.results] == [r.cost for r in plain.results]
    assert all(r.cost and r.list_price for r in batch.results)
    assert not any(r.list_price for r in plain.results)
    assert batch.summaries[0].cost == f"{plain.summaries[0].cost} at list price"
    markdown = report_markdown(batch)
    assert f"| {plain.summaries[0].cost} at list price |" in markdown
    assert (
        "Costs of the Batch API runs are at list price: genai-prices has no Batch API rate for "
        "llama-3.1-8b-instant, and the Batch API bills less." in markdown
    )
    assert "at list price" not in report_markdown(plain)
    written = tmp_path / "results.jsonl"
    write_results(batch, written)
    assert all(json.loads(line)["list_price"] for line in written.read_text().splitlines())


async def test_a_batch_eval_with_batch_rates_is_priced_at_them(tmp_path: Path):
    # Groq's gpt-oss-120b has Batch API rates in the table (half the list price): used, and
    # nothing says list price.
    model = "openai/gpt-oss-120b"
    plain = await priced_eval(tmp_path / "a", model, batch=False)
    batch = await priced_eval(tmp_path / "b", model, batch=True)
    for listed, batched in zip(plain.results, batch.results, strict=True):
        assert listed.cost and batched.cost and batched.cost < listed.cost
        assert not batched.list_price
    assert "list price" not in report_markdown(batch)


def shown_everywhere(run_id: str) -> dict[str, str]:
    """How the saved run `run_id` reads on each surface that shows its cost."""
    from llamaberry_ui.history import open_run, show_run

    def invoke(*args: str) -> str:
        result = CliRunner().invoke(cli, ["history", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    with Store() as store:
        run = store.get(run_id)
        view, why = open_run(store, run_id)
        assert view is not None, why
        page = show_run(store, run_id)
    terminal = Console(file=io.StringIO(), width=400, highlight=False)
    TerminalView(console=terminal).show(RunFinished(run=run))
    markdown = invoke("export", "--format", "md").split("\n---\n")
    return {
        "history show": invoke("show", run_id),
        "export md": next(part for part in markdown if run_id in part),
        "web UI summary": view.summary_markdown(),
        "web UI page": page,
        "terminal": terminal.file.getvalue(),  # type: ignore[attr-defined]
    }


def fields(run_id: str) -> list[dict]:
    """The saved run's JSON as `history show --json` and the jsonl export write it."""
    shown = CliRunner().invoke(cli, ["history", "show", run_id, "--json"]).stdout
    exported = CliRunner().invoke(cli, ["history", "export"]).stdout.splitlines()
    return [json.loads(shown), *(json.loads(x) for x in exported if run_id in x)]


async def saved_eval(
    tmp_path: Path, model: str, batch: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, float]:
    """A one-mode eval of three items, with `batch` or without, on Groq-priced `model` against
    the fake server, saved in the history (a home of its own: an eval of the same items would
    reuse the other's runs): its first run's id and cost."""
    monkeypatch.setenv("LLAMABERRY_HOME", str(tmp_path / f"home-{batch}"))
    report = await priced_eval(tmp_path / str(batch), model, batch=batch, store=Store())
    run_id = report.results[0].run_id
    assert run_id
    with Store() as store:
        cost = store.get(run_id).cost
    assert cost
    return run_id, cost


@pytest.mark.parametrize(
    ("model", "label", "list_price"),
    [
        ("llama-3.1-8b-instant", "at list price (the Batch API bills less)", True),
        ("openai/gpt-oss-120b", "(Batch API)", False),
    ],
)
async def test_a_saved_batch_run_says_how_its_cost_was_priced_wherever_it_is_shown(
    tmp_path: Path, model: str, label: str, list_price: bool, monkeypatch: pytest.MonkeyPatch
):
    # A batch eval's run saved in the history: every surface shows its cost with how it was
    # priced, and the JSON says it in fields; a plain eval's run of the same item as before.
    batch_id, batch_cost = await saved_eval(tmp_path, model, True, monkeypatch)
    shown = f"{dollars(batch_cost)} {label}"
    for surface, text in shown_everywhere(batch_id).items():
        assert shown in text, surface
    for data in fields(batch_id):
        assert data["cost"] == batch_cost and data["settings"]["batch"] is True
        assert data["list_price"] is list_price
    plain_id, plain_cost = await saved_eval(tmp_path, model, False, monkeypatch)
    assert plain_cost > batch_cost if not list_price else plain_cost == batch_cost
    bare = dollars(plain_cost)
    for surface, text in shown_everywhere(plain_id).items():
        assert bare in text and "Batch API" not in text and "list price" not in text, surface
    assert f"out), {bare}\n" in shown_everywhere(plain_id)["history show"]
    for data in fields(plain_id):
        assert data["cost"] == plain_cost and "batch" not in data["settings"]
        assert data["list_price"] is None


async def test_exporting_a_round_does_not_start_a_provider_that_runs_here(tmp_path: Path):
    async with Engine(provider="local", history=False) as engine:
        client = BatchClient(engine.client, Batcher(BatchLedger("t", tmp_path / "h.db"), None))
        await client.ready()  # a run's lifecycle awaits it before its first call
        assert engine.client.server is None


def test_exporting_again_before_the_answers_are_imported_writes_the_round_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # It ended in a traceback: the second pass waited on the first's "batch" with no backend.
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    data = sums(tmp_path / "sums.jsonl", 3)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    export = ["batch", "export", str(data), "--modes", "single", "--provider", "openai",
              "--base-url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "rep"), "-o"]  # fmt: skip
    for path in (first, second):
        result = CliRunner().invoke(cli, [*export, str(path)])
        assert result.exit_code == 0, result.output
        assert "wrote 3 requests" in result.output
        assert "Traceback" not in result.output
    assert second.read_text() == first.read_text()


async def test_outputs_of_an_exported_round_come_back_by_import(tmp_path: Path):
    ledger = BatchLedger("vllm", tmp_path / "h.db")
    ledger.sent("exported", [("abc-1", "h1")])
    line = {"custom_id": "abc-1", "response": {"status_code": 200, "body": {"choices": []}}}
    stray = {"custom_id": "zzz-9", "response": {"status_code": 200, "body": {}}}
    taken = import_outputs(ledger, (json.dumps(line) + "\n" + json.dumps(stray)).encode())
    assert taken == (1, 1)
    known = ledger.call("abc-1", "h1")
    assert known is not None and known.status == 200


def run_batch_like_vllm(server: FakeServer, requests: Path, outputs: Path) -> int:
    """What `vllm run-batch` does with a request file: each line's body answered by the
    server, one output line per request; returns the number of lines."""
    import urllib.request

    lines = [json.loads(line) for line in requests.read_text().splitlines()]
    out = []
    for line in lines:
        asked = urllib.request.Request(
            server.openai_base_url + "/chat/completions",
            data=json.dumps(line["body"]).encode(),
            headers={"content-type": "application/json", "authorization": "Bearer k"},
        )
        with urllib.request.urlopen(asked, timeout=30) as answer:
            body = json.loads(answer.read())
        out.append({"id": "x", "custom_id": line["custom_id"], "error": None,
                    "response": {"status_code": 200, "body": body}})  # fmt: skip
    outputs.write_text("".join(json.dumps(o) + "\n" for o in out))
    return len(lines)


def test_batch_export_and_import_walk_an_eval_round_by_round(
    fake_server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fake_server.reply_with(sums_script)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    data = sums(tmp_path / "sums.jsonl", 5)
    requests, outputs, out = tmp_path / "round.jsonl", tmp_path / "out.jsonl", tmp_path / "rep"
    export = ["batch", "export", str(data), "--modes", "single,refine", "--provider", "openai",
              "--base-url", "http://127.0.0.1:9/v1", "-o", str(requests),
              "--out", str(out)]  # fmt: skip
    sizes = []
    for _ in range(6):
        result = CliRunner().invoke(cli, export)
        assert result.exit_code == 0, result.output
        if (out / "report.md").exists():
            break
        assert f"wrote {5 * (2 if not sizes else 1)} requests" in result.output
        sizes.append(run_batch_like_vllm(fake_server, requests, outputs))
        imported = CliRunner().invoke(cli, ["batch", "import", str(outputs)])
        assert imported.exit_code == 0, imported.output
        assert f"took {sizes[-1]} answers" in imported.output
    # Round 1: single and refine's turn 1; then turns 2 and 3; then the synthesis.
    assert sizes == [10, 5, 5, 5]
    assert "answered by your own batch runner" in (out / "report.md").read_text()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(row["status"] == "ok" for row in rows)
    # Nothing was sent to the endpoint named on the command line (it does not exist).
    assert all("127.0.0.1:9/" not in r.path for r in fake_server.requests)
