"""Eval: scorers, datasets, scoring runs per mode, resuming, and a report that matches its data."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from llamaberry import Engine, InputError
from llamaberry.cli import cli
from llamaberry.core.scoring import infer_scorer, parse_gold, score
from llamaberry.eval import (
    build_report,
    draw_chart,
    evaluate,
    load_dataset,
    report_markdown,
    wilson,
    write_results,
)
from llamaberry.store import Store
from llamaberry.testing import FakeServer, Fault, RecordedRequest, Reply

from .conftest import refine_script
from .test_compare import mode_script

# -- scorers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        ("There are 3 r's in strawberry.", "3"),
        ("There are three r's in strawberry.", "3"),
        ("3", "three"),
        ("The letter appears twice.", "2"),
        ("0.9", ".9"),
        (".9 is larger", "0.9"),
        ("The ball costs $0.05.", "0.05"),
        ("It comes to 1,000 apples.", "1000"),
        ("twenty-one", "21"),
        ("(B)", "B"),
        ("B", "(B)"),
        ("The answer is (C).", "C"),
        ("I choose option b because it is heavier.", "B"),
        ("Yes, every bloop is a lazzie.", "yes"),
        ("No.", "no"),
        ("We add 3 and 4, then double 7 to get 14. So the answer is 42.", "42"),
        ("Step 1: 48 / 2 = 24.\nStep 2: 48 + 24 = 72.\n\n**72**", "clips <<48+24=72>>\n#### 72"),
        ("The capital of France is Paris.", "Paris"),
    ],
)
def test_scorers_find_the_answer_inside_a_reply(answer: str, gold: str):
    assert score(answer, gold).correct, (answer, gold, score(answer, gold))


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        ("There are 13 r's.", "3"),
        ("thirty", "3"),
        ("0.99", "0.9"),
        ("9.11 is larger", "9.9"),
        ("(C)", "B"),
        ("No, not all bloops are lazzies.", "yes"),
        ("The capital of France is Lyon.", "Paris"),
        ("", "3"),
        (None, "3"),
    ],
)
def test_scorers_reject_wrong_answers(answer: str | None, gold: str):
    assert not score(answer, gold).correct


@pytest.mark.parametrize(
    ("gold", "scorer"),
    [
        ("3", "number"),
        ("0.05", "number"),
        ("three", "number"),
        ("$1,200", "number"),
        ("#### 72", "number"),
        ("B", "choice"),
        ("(b)", "choice"),
        ("yes", "choice"),
        ("Paris", "contains"),
        ("3 apples and a pear", "contains"),
    ],
)
def test_the_scorer_is_inferred_from_the_gold(gold: str, scorer: str):
    assert infer_scorer(gold) == scorer


def test_exact_needs_the_whole_answer():
    assert score("**Paris.**", "paris", "exact").correct
    assert score("Answer: Paris", "Paris", "exact").correct
    assert not score("Paris, France", "Paris", "exact").correct


def test_the_scorer_reports_what_it_read_as_the_answer():
    verdict = score("Counting gives 3 then 4, so there are three.", "3")
    assert verdict.predicted is not None and verdict.scorer == "number"
    assert score("(B)", "B").predicted == "B"


def test_wilson_interval_matches_the_textbook_values():
    low, high = wilson(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


# -- datasets -----------------------------------------------------------------------------------


def test_the_builtin_tricky_set_is_answer_checked():
    dataset = load_dataset("tricky", builtin=True)
    assert len(dataset.items) >= 12
    for item in dataset.items:
        # Every gold is readable by its scorer and is right against itself.
        assert score(parse_gold(item.answer), item.answer, item.scorer).correct, item
        counting = re.search(r'letter "(\w)" appear in the word "(\w+)"', item.question)
        if counting:
            letter, word = counting.groups()
            assert int(item.answer) == word.count(letter), item.question


def test_gsm8k_style_lines_are_read(tmp_path: Path):
    path = tmp_path / "gsm.jsonl"
    path.write_text(
        '{"question": "Tom has 3 apples and buys 4 more. How many now?", '
        '"answer": "He has 3 + 4 = <<3+4=7>>7 apples.\\n#### 7"}\n'
        "\n"
        '{"question": "A box holds 12 eggs. How many eggs in 5 boxes?", '
        '"answer": "12 * 5 = <<12*5=60>>60\\n#### 60"}\n'
        '{"question": "Is 2 prime?", "answer": "yes", "scorer": "contains"}\n'
    )
    dataset = load_dataset(path)
    assert dataset.name == "gsm"
    assert [(i.index, i.scorer, parse_gold(i.answer)) for i in dataset.items] == [
        (0, "number", "7"),
        (1, "number", "60"),
        (2, "contains", "yes"),
    ]
    assert score("So Tom has 7 apples now.", dataset.items[0].answer).correct
    assert not score("There are 12 * 5 = 65 eggs.", dataset.items[1].answer).correct


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2 is not JSON"),
        ('{"answer": "3"}', 'line 2 needs a "question"'),
        ('{"question": "q", "answer": "3", "scorer": "fuzzy"}', "unknown scorer 'fuzzy'"),
        ('{"question": "q", "answer": "none", "scorer": "number"}', "holds no number"),
        ("[" * 100_000 + "]" * 100_000, "line 2 is nested too deeply"),
        ('{"question": "q", "answer": ' + "7" * 5000 + "}", "line 2 cannot be read"),
    ],
)
def test_a_bad_dataset_line_is_named_and_skipped(tmp_path: Path, line: str, message: str):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"question": "ok?", "answer": "yes"}\n' + line + '\n{"question": "2?", "answer": "2"}\n'
    )
    dataset = load_dataset(path)
    [skipped] = dataset.skipped
    assert message in skipped
    assert [item.question for item in dataset.items] == ["ok?", "2?"]


def test_a_dataset_with_no_usable_line_is_one_error(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text("not json\n")
    with pytest.raises(InputError, match=re.escape("no usable records (bad line 1 is not JSON")):
        load_dataset(path)


# -- running an eval ----------------------------------------------------------------------------

# question -> what the single mode answers; refine always concludes "3" (see refine_script).
SINGLE_SAYS = {
    'How many times does the letter "r" appear in "strawberry"?': "There are three r's.",
    'How many times does the letter "s" appear in "mississippi"?': "It appears 4 times.",
    "A bat and a ball cost $1.10; the bat costs $1 more. Cost of the ball?": "$0.10",
    "What is 1 + 2?": "2",
}
GOLDS = ["3", "4", "0.05", "3"]


def script(request: RecordedRequest) -> Reply | str:
    if request.system is None:
        return Reply(SINGLE_SAYS[request.user])
    return refine_script(request)


@pytest.fixture
def dataset_file(tmp_path: Path) -> Path:
    path = tmp_path / "four.jsonl"
    lines = [
        json.dumps({"question": q, "answer": gold})
        for q, gold in zip(SINGLE_SAYS, GOLDS, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def engine(server: FakeServer):
    async with Engine(api_key="test-key", base_url=server.groq_base_url, turns=1) as built:
        yield built


async def test_each_mode_is_scored_per_item(server: FakeServer, engine: Engine, dataset_file):
    server.reply_with(script)
    report = await evaluate(engine, load_dataset(dataset_file), ("single", "refine"))
    verdicts = {(r.item, r.mode): r.correct for r in report.results}
    assert [verdicts[i, "single"] for i in range(4)] == [True, True, False, False]
    assert [verdicts[i, "refine"] for i in range(4)] == [True, False, False, True]
    single, refine = report.summaries
    assert (single.correct, single.scored, refine.correct, refine.scored) == (2, 4, 2, 4)
    [pair] = report.head_to_head
    assert (pair.a, pair.b, pair.items, pair.a_only, pair.b_only) == ("single", "refine", 4, 1, 1)
    # single: 1 call per item; refine with one turn: a turn and a synthesis.
    assert len(server.requests) == 4 * 1 + 4 * 2


async def test_steps_mode_is_evaluated_too(server: FakeServer, engine: Engine, dataset_file):
    server.reply_with(mode_script(final="The answer is 3."))
    report = await evaluate(engine, load_dataset(dataset_file), ("steps",), limit=2)
    assert [(r.item, r.correct) for r in report.results] == [(0, True), (1, False)]


async def test_the_report_numbers_match_the_per_item_file(
    server: FakeServer, engine: Engine, dataset_file, tmp_path: Path
):
    server.reply_with(script)
    report = await evaluate(engine, load_dataset(dataset_file), ("single", "refine"))
    path = tmp_path / "results.jsonl"
    write_results(report, path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 8
    markdown = report_markdown(report)
    for summary in report.summaries:
        mine = [r for r in rows if r["mode"] == summary.mode and r["correct"] is not None]
        right = sum(r["correct"] for r in mine)
        mean_tokens = sum(r["tokens"] for r in mine) / len(mine)
        mean_seconds = sum(r["seconds"] for r in mine) / len(mine)
        assert (summary.correct, summary.scored) == (right, len(mine))
        assert summary.mean_tokens == pytest.approx(mean_tokens)
        assert summary.mean_seconds == pytest.approx(mean_seconds)
        low, high = wilson(right, len(mine))
        line = next(x for x in markdown.splitlines() if x.startswith(f"| {summary.mode} |"))
        unreadable = sum(r["unreadable"] for r in mine)
        assert line.split(" | ")[1:6] == [
            f"{right / len(mine):.1%}",
            f"{low:.1%} – {high:.1%}",
            f"{right} / {len(mine)}",
            str(unreadable),
            f"{mean_tokens:,.0f}",
        ]
    assert "| single vs refine | 4 | 1 | 1 |" in markdown


async def test_a_failed_item_is_counted_as_a_failure_and_retried_on_rerun(
    server: FakeServer, engine: Engine, dataset_file
):
    dataset = load_dataset(dataset_file)
    server.reply_with(lambda r: Fault.status(401) if "mississippi" in r.user else script(r))
    first = await evaluate(engine, dataset, ("single",))
    [summary] = first.summaries
    assert (summary.failures, summary.scored, summary.correct) == (1, 3, 1)
    assert [r.status for r in first.results] == ["ok", "failed", "ok", "ok"]
    assert "Failed runs are not scored" in report_markdown(first)
    server.reply_with(script)
    before = len(server.requests)
    second = await evaluate(engine, dataset, ("single",))
    assert len(server.requests) - before == 1
    assert second.summaries[0].failures == 0 and second.summaries[0].correct == 2


async def test_resume_after_interruption_does_not_repeat_finished_items(
    server: FakeServer, engine: Engine, dataset_file
):
    dataset = load_dataset(dataset_file)
    server.reply_with(lambda r: Fault.hang() if "1 + 2" in r.user else script(r))
    finished: list[int] = []
    three_done = asyncio.Event()

    def on_result(result):
        finished.append(result.item)
        if len(finished) == 3:
            three_done.set()

    task = asyncio.create_task(evaluate(engine, dataset, ("single",), on_result=on_result))
    await asyncio.wait_for(three_done.wait(), 10)
    task.cancel()  # what Ctrl-C does to the running eval
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(finished) == [0, 1, 2]

    server.reply_with(script)
    before = [r.user for r in server.requests]
    report = await evaluate(engine, dataset, ("single",))
    asked = [r.user for r in server.requests][len(before) :]
    assert asked == ["What is 1 + 2?"]
    assert [r.reused for r in report.results] == [True, True, True, False]
    assert [r.correct for r in report.results] == [True, True, False, False]


async def test_a_change_of_settings_is_not_taken_from_the_store(
    server: FakeServer, engine: Engine, dataset_file
):
    server.reply_with(script)
    dataset = load_dataset(dataset_file)
    await evaluate(engine, dataset, ("refine",), limit=1)
    async with Engine(api_key="k", base_url=server.groq_base_url, turns=2) as other:
        report = await evaluate(other, dataset, ("refine",), limit=1)
    assert report.results[0].reused is False
    assert len(server.requests) == 2 + 3


async def test_eval_runs_are_tagged_in_the_history(server: FakeServer, dataset_file, tmp_path):
    server.reply_with(script)
    store = Store(tmp_path / "own.db")
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        report = await evaluate(engine, load_dataset(dataset_file), ("single",), store=store)
    assert store.count() == 4
    assert {r.run_id for r in report.results} == {row.id for row in store.list_runs()}


def test_the_chart_is_a_png(tmp_path: Path):
    from llamaberry.eval import ItemResult

    results = [
        ItemResult(
            item=i,
            mode=mode,
            question="q",
            gold="3",
            scorer="number",
            status="ok",
            correct=mode == "refine",  # 0% and 100%: the interval's edges touch the point
            predicted="3",
            answer="3",
            error=None,
            tokens=100 if mode == "single" else 900,
            seconds=1.0,
            run_id=f"{mode}{i}",
            reused=False,
        )
        for i in range(6)
        for mode in ("single", "refine")
    ]
    report = build_report("d", "m", ["single", "refine"], results)
    draw_chart(report, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the command line --------------------------------------------------------------------------


def test_cli_eval_writes_the_report_and_a_rerun_pays_for_nothing(
    fake_server: FakeServer, dataset_file: Path, tmp_path: Path
):
    fake_server.reply_with(script)
    env = {"GROQ_API_KEY": "test-key", "GROQ_BASE_URL": fake_server.groq_base_url}
    out = tmp_path / "report"
    args = ["eval", str(dataset_file), "--modes", "single,refine", "-n", "1", "--out", str(out)]
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "| single | 50.0% |" in result.stdout
    assert {p.name for p in out.iterdir()} == {"report.md", "results.jsonl", "chart.png"}
    assert (out / "report.md").read_text() == result.stdout
    asked = len(fake_server.requests)
    again = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert again.exit_code == 0
    assert len(fake_server.requests) == asked
    assert again.stdout == result.stdout


def test_cli_eval_needs_a_dataset_or_builtin():
    result = CliRunner().invoke(cli, ["eval"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: Give a DATASET.jsonl file or --builtin")


def test_cli_eval_builtin_with_a_limit(fake_server: FakeServer, tmp_path: Path):
    fake_server.reply_with(mode_script())
    env = {"GROQ_API_KEY": "test-key", "GROQ_BASE_URL": fake_server.groq_base_url}
    args = ["eval", "--builtin", "tricky", "--limit", "2", "--modes", "single"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path)], env=env)
    assert result.exit_code == 0, result.output
    assert "| single | 50.0% |" in result.stdout  # "three r's" right, and wrong for mississippi
    assert len(fake_server.requests) == 2


def stopped_by_ctrl_c(process: subprocess.Popen) -> str:
    """The stderr of `process` once it has ended after a Ctrl-C. If it is still running 30 s
    on, SIGABRT makes faulthandler print where every thread was stuck (the process runs with
    PYTHONFAULTHANDLER=1), the process is not left behind, and the test fails with that."""
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        _, err = process.communicate(timeout=30)
        raise AssertionError(f"eval ignored Ctrl-C for 30 s:\n{err.decode()[-6000:]}") from None
    return err.decode()


def saved_count() -> int:
    """Runs in the history another process is writing (0 while it cannot be read yet)."""
    try:
        store = Store()
    except Exception:
        return 0
    try:
        return store.count()
    except Exception:
        return 0
    finally:
        store.close()


def ctrl_c_as_in_a_terminal() -> None:
    """In the child before it starts: Ctrl-C does what it does in a terminal, however pytest
    was started (a shell starts a background job with SIGINT ignored, and a child inherits
    that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to a process group")
def test_ctrl_c_stops_the_cli_cleanly_and_the_rerun_resumes(fake_server: FakeServer, tmp_path):
    dataset = tmp_path / "sums.jsonl"
    dataset.write_text(
        "".join(
            json.dumps({"question": f"What is {i} + {i}?", "answer": 2 * i}) + "\n"
            for i in range(4)
        )
    )
    stuck = {"on": True}

    def answer(request: RecordedRequest):
        if "3 + 3" in request.user and stuck["on"]:
            return Fault.hang()
        return Reply(f"The answer is {2 * int(request.user.split()[2])}.")

    fake_server.reply_with(answer)
    env = {
        **os.environ,
        "GROQ_API_KEY": "test-key",
        "GROQ_BASE_URL": fake_server.groq_base_url,
        "PYTHONFAULTHANDLER": "1",
    }
    command = [sys.executable, "-m", "llamaberry", "eval", str(dataset), "--modes", "single"]
    command += ["--out", str(tmp_path / "out")]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=ctrl_c_as_in_a_terminal,
    )
    # Ctrl-C once the three quick items are saved and the fourth hangs: waited for in the
    # history the process writes, not slept for (it can take longer on a loaded machine).
    deadline = time.monotonic() + 60
    while len(fake_server.requests) < 4 or saved_count() < 3:
        assert time.monotonic() < deadline, "the three quick items were never saved"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    err = stopped_by_ctrl_c(process)
    assert process.returncode == 130
    assert "Traceback" not in err
    assert "the same command resumes" in err

    stuck["on"] = False
    asked = len(fake_server.requests)
    rerun = subprocess.run(command, env=env, capture_output=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert [r.user for r in fake_server.requests[asked:]] == ["What is 3 + 3?"]
    assert "| single | 100.0% |" in rerun.stdout.decode()


# Runs the CLI with one more thread that, once told (a file appears), takes a SIGINT itself.
# A process-wide Ctrl-C is handled by whichever of its threads the kernel picks; on a busy
# machine that is sometimes not the main thread, asleep in the event loop's select().
_SIGINT_ON_A_THREAD = """
import os, signal, sys, threading, time
from llamaberry.cli import main

def interrupt(go):
    while not os.path.exists(go):
        time.sleep(0.05)
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)

threading.Thread(target=interrupt, args=(sys.argv[1],), daemon=True).start()
sys.argv = ["llamaberry", *sys.argv[2:]]
main()
"""


def test_ctrl_c_taken_by_another_thread_still_stops_the_eval(fake_server: FakeServer, tmp_path):
    dataset = tmp_path / "sums.jsonl"
    dataset.write_text(
        "".join(
            json.dumps({"question": f"What is {i} + {i}?", "answer": 2 * i}) + "\n"
            for i in range(2)
        )
    )

    def answer(request: RecordedRequest):
        if "1 + 1" in request.user:
            return Fault.hang()
        return Reply("The answer is 0.")

    fake_server.reply_with(answer)
    env = {
        **os.environ,
        "GROQ_API_KEY": "test-key",
        "GROQ_BASE_URL": fake_server.groq_base_url,
        "PYTHONFAULTHANDLER": "1",
    }
    go = tmp_path / "go"
    command = [sys.executable, "-c", _SIGINT_ON_A_THREAD, str(go), "eval", str(dataset)]
    command += ["--modes", "single", "--out", str(tmp_path / "out"), "--timeout", "600"]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=ctrl_c_as_in_a_terminal,
    )
    deadline = time.monotonic() + 60
    while len(fake_server.requests) < 2 or saved_count() < 1:
        assert time.monotonic() < deadline, "the quick item was never saved"
        time.sleep(0.05)
    go.touch()
    # The call's timeout is 600 s: nothing else wakes the event loop before then.
    err = stopped_by_ctrl_c(process)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "the same command resumes" in err


async def test_a_question_the_engine_refuses_fails_only_its_item(
    server: FakeServer, engine: Engine, tmp_path: Path
):
    server.reply_with(script)
    path = tmp_path / "odd.jsonl"
    lines = [
        {"question": "What is 1 + 2?", "answer": "2"},
        {"question": "bell\u0007", "answer": "1"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = await evaluate(engine, load_dataset(path), ("single",))
    assert [r.status for r in report.results] == ["ok", "failed"]
    assert "control character" in report.results[1].error
    assert report.results[1].run_id is None
    assert report.summaries[0].failures == 1
    assert len(server.requests) == 1
