"""An eval reuses a saved run only when it was made with the mode's prompts as they are now:
each run records its mode's prompt version (a fingerprint of the texts it sends), and a run
saved with another version, or before versions were recorded, is asked again."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from llamaberry import Engine, modes
from llamaberry.cli import cli
from llamaberry.eval import evaluate, load_dataset, report_markdown
from llamaberry.modes import prompts, refine, single, steps
from llamaberry.modes.fingerprint import fingerprint, prompt_names
from llamaberry.store import Store
from llamaberry.testing import FakeServer

from .test_eval import GOLDS, SINGLE_SAYS, script

OLD_VERSION = "0123456789ab"
QUESTIONS = list(SINGLE_SAYS)


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
    async with Engine(
        api_key="test-key", base_url=server.groq_base_url, turns=1, history=False
    ) as built:
        yield built


def source(module) -> str:
    return Path(module.__file__).read_text(encoding="utf-8")


# -- the eval's resume --------------------------------------------------------------------------


async def test_a_run_saved_with_the_current_prompts_is_reused(
    server: FakeServer, engine: Engine, dataset_file: Path, tmp_path: Path
):
    server.reply_with(script)
    store = Store(tmp_path / "history.db")
    dataset = load_dataset(dataset_file)
    first = await evaluate(engine, dataset, ("single", "refine"), store=store)
    assert not any(r.reused for r in first.results)
    for result in first.results:
        assert store.get(result.run_id).prompt_version == modes.prompt_version(result.mode)
    asked = len(server.requests)
    again = await evaluate(engine, dataset, ("single", "refine"), store=store)
    assert len(server.requests) == asked
    assert all(r.reused for r in again.results) and again.reused == 8
    assert again.other_prompts == 0
    assert not any("other prompts" in line for line in again.warnings)


async def test_runs_saved_with_other_prompts_or_none_are_run_again(
    server: FakeServer, engine: Engine, dataset_file: Path, tmp_path: Path
):
    server.reply_with(script)
    path = tmp_path / "history.db"
    store = Store(path)
    dataset = load_dataset(dataset_file)
    first = await evaluate(engine, dataset, ("single",), store=store)
    ids = [r.run_id for r in first.results]
    # Item 0 as a release with other prompts saved it (through the store's own API; the run
    # keeps its eval tag), item 1 as a release from before runs recorded a prompt version: its
    # JSON has no such field at all.
    store.save(store.get(ids[0]).model_copy(update={"prompt_version": OLD_VERSION}))
    store.close()
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE runs SET data = json_remove(data, '$.prompt_version') WHERE id = ?", (ids[1],)
        )
    assert store.get(ids[1]).prompt_version is None

    before = len(server.requests)
    second = await evaluate(engine, dataset, ("single",), store=store)
    asked = [r.user for r in server.requests[before:]]
    assert sorted(asked) == sorted(QUESTIONS[:2])
    assert [r.reused for r in second.results] == [False, False, True, True]
    assert [r.correct for r in second.results] == [r.correct for r in first.results]
    assert second.other_prompts == 2 and second.reused == 2
    line = "2 saved runs were made with other prompts (another llamaberry version); run again."
    assert line in second.warnings
    assert f"Note: {line}" in report_markdown(second)
    for result in second.results[:2]:
        assert store.get(result.run_id).prompt_version == modes.prompt_version("single")

    # The runs made now are the current prompts' ones: a third eval reuses every item.
    third = await evaluate(engine, dataset, ("single",), store=store)
    assert len(server.requests) == before + 2
    assert third.reused == 4 and third.other_prompts == 0


async def test_a_stopped_run_made_with_other_prompts_gives_no_saved_replies(
    server: FakeServer, engine: Engine, dataset_file: Path, tmp_path: Path
):
    server.reply_with(script)
    store = Store(tmp_path / "history.db")
    dataset = load_dataset(dataset_file)
    first = await evaluate(engine, dataset, ("single",), store=store, limit=1)
    saved = store.get(first.results[0].run_id)
    # A run an older release stopped after its call had finished: a rerun with the same
    # prompts would take that call's reply unsent; made with other prompts, it is asked again.
    store.save(saved.model_copy(update={"status": "cancelled", "prompt_version": OLD_VERSION}))
    before = len(server.requests)
    second = await evaluate(engine, dataset, ("single",), store=store, limit=1)
    assert [r.user for r in server.requests[before:]] == [QUESTIONS[0]]
    assert second.results[0].reused is False and second.results[0].correct is True
    assert second.other_prompts == 0  # a stopped run is never reused anyway


def test_the_cli_says_how_many_runs_were_reused(fake_server: FakeServer, dataset_file: Path):
    fake_server.reply_with(script)
    env = {"GROQ_API_KEY": "test-key", "GROQ_BASE_URL": fake_server.groq_base_url}
    args = ["eval", str(dataset_file), "--modes", "single", "-n", "1"]
    first = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "reused" not in first.stderr
    ids = [row.id for row in Store().list_runs()]
    with Store() as store:
        store.save(store.get(ids[0]).model_copy(update={"prompt_version": OLD_VERSION}))
    again = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "1 saved run was made with other prompts" in again.stderr
    assert "3 of 4 runs reused from the history" in again.stderr


# -- what a run records and shows --------------------------------------------------------------


async def test_a_run_records_its_prompt_version_and_history_shows_it(server: FakeServer):
    server.reply_with(script)
    async with Engine(api_key="k", base_url=server.groq_base_url, turns=1) as engine:
        run = await engine.run("refine", QUESTIONS[0])
    version = modes.prompt_version("refine")
    assert run.prompt_version == version and len(version) == 12
    assert run.public_dict()["prompt_version"] == version
    shown = CliRunner().invoke(cli, ["history", "show", run.id])
    assert shown.exit_code == 0, shown.output
    [settings] = [line for line in shown.stdout.splitlines() if "**Settings:**" in line]
    assert settings.endswith(f"prompts={version}")
    as_json = CliRunner().invoke(cli, ["history", "show", run.id, "--json"])
    assert json.loads(as_json.stdout)["prompt_version"] == version


# -- the fingerprint -----------------------------------------------------------------------------


def test_the_fingerprint_changes_with_a_prompt_text_and_only_for_its_modes():
    base = source(prompts)
    changed = base.replace("You are a careful problem solver.", "You are a careful solver.", 1)
    assert changed != base
    old_refine, new_refine = (fingerprint(text, source(refine)) for text in (base, changed))
    assert old_refine != new_refine and len(new_refine) == 12
    # single sends none of refine's texts: its version stays, so its runs are still reused.
    assert fingerprint(base, source(single)) == fingerprint(changed, source(single))
    # The installed modules give the same as their sources.
    assert old_refine == modes.prompt_version("refine")


def test_the_fingerprint_follows_texts_a_prompt_function_reaches_and_the_mode_sends_itself():
    base = source(prompts)
    # `_question` is reached through drafts' message builders, not named by drafts itself.
    changed = base.replace('f"<question>\\n{question}\\n</question>"', 'f"<q>{question}</q>"')
    assert changed != base
    drafts_source = source(modes.drafts)
    assert fingerprint(base, drafts_source) != fingerprint(changed, drafts_source)
    # A line steps sends from its own module (a retry's reason).
    mine = source(steps)
    assert '"it was empty"' in mine
    assert fingerprint(base, mine) != fingerprint(base, mine.replace('"it was empty"', '"empty"'))


def test_the_fingerprint_ignores_comments_docstrings_and_layout():
    base = source(prompts)
    reworded = base.replace('"""Every prompt llamaberry sends, in one place.', '"""Prompts.', 1)
    reworded = reworded.replace("# -- the steps (g1) mode", "# -- steps", 1)
    reworded = reworded.replace("\n\n\ndef ", "\n\n\n\ndef ")
    assert reworded != base
    for mode in (refine, steps, single):
        assert fingerprint(base, source(mode)) == fingerprint(reworded, source(mode))


def test_every_prompt_definition_counts_for_some_mode():
    import ast

    tree = ast.parse(source(prompts))
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    defined |= {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    reached: set[str] = set()
    for spec in modes.MODES.values():
        mine = prompt_names(source(prompts), source(sys.modules[spec.run.__module__]))
        assert mine, spec.name
        reached |= mine
    assert defined <= reached, sorted(defined - reached)


def test_the_prompt_versions_are_the_same_in_another_process():
    ours = {name: modes.prompt_version(name) for name in modes.names()}
    code = (
        "import json; from llamaberry import modes; "
        "print(json.dumps({n: modes.prompt_version(n) for n in modes.names()}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(done.stdout) == ours
    assert len(set(ours.values())) == len(ours)  # each mode its own
