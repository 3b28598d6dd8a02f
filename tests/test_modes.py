"""The mode registry: each mode declared once, every surface reading it, options checked once."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llamaberry import Engine, InputError, Run
from llamaberry import modes as registry
from llamaberry.cli import cli
from llamaberry.core.results import ModeResult
from llamaberry.testing import FakeServer

from .conftest import refine_script

ROOT = Path(__file__).resolve().parent.parent


def test_every_mode_is_declared_once_with_what_every_surface_needs():
    assert registry.names()[:3] == ["single", "refine", "steps"]
    for name, spec in registry.MODES.items():
        assert spec.name == name and spec.description.endswith(".")
        assert spec.result.model_fields["mode"].default == name
        assert ModeResult.type_for(name) is spec.result
        spec.options()  # every option has a default


def test_the_cli_reads_its_mode_choices_and_option_flags_from_the_registry():
    runner = CliRunner()
    ask = runner.invoke(cli, ["ask", "--help"]).output
    for name in registry.names():
        assert name in ask.split("--mode")[1].split("\n")[0] + ask
    for option in registry.option_fields():
        flag = "--" + option.replace("_", "-")
        assert flag in ask
        assert flag in runner.invoke(cli, ["compare", "--help"]).output
        assert flag in runner.invoke(cli, ["eval", "--help"]).output
    history = runner.invoke(cli, ["history", "--help"]).output
    assert all(name in history for name in registry.names())
    listed = json.loads(runner.invoke(cli, ["modes", "--json"]).output)
    assert [m["name"] for m in listed] == registry.names()
    refine = next(m for m in listed if m["name"] == "refine")
    assert refine["options"]["turns"]["accepts"] == "a whole number from 1 to 10"
    assert refine["options"]["turns"]["env"] == "LLAMABERRY_TURNS"


def test_an_unknown_mode_lists_the_registered_ones():
    with pytest.raises(InputError) as failure:
        registry.get("tree")
    assert all(name in str(failure.value) for name in registry.names())


async def test_engine_run_takes_a_mode_by_name_and_its_own_options(server: FakeServer):
    server.reply_with(refine_script)
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        run = await engine.run("refine", "q", turns=2)
        assert [t.index for t in run.result.turns] == [1, 2] and run.result.synthesis is not None
        assert run.result.mode == "refine" and run.settings["turns"] == 2
        with pytest.raises(InputError, match="single has no option 'turns'"):
            engine.stream("single", "q", turns=2)
    assert len(server.requests) == 3


async def test_engine_defaults_serve_only_the_modes_that_take_them(server: FakeServer):
    server.reply_with(refine_script)
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False, turns=1) as e:
        single = await e.single("q")  # turns is refine's; single ignores it
        refine = await e.refine("q")
    assert "turns" not in single.settings
    assert len(refine.result.turns) == 1


def test_an_option_no_mode_takes_is_refused():
    with pytest.raises(InputError, match="Unknown option 'turnz'"):
        Engine(api_key="k", turnz=3)


def test_the_json_schema_is_one_object_tagged_by_mode():
    run = Run(mode="steps", model="m", provider="groq", question="q")
    data = json.loads(run.model_dump_json())
    assert data["mode"] == data["result"]["mode"] == "steps"
    assert set(data["result"]) == {"mode", "steps", "final"}
    assert Run.model_validate_json(run.model_dump_json()) == run


def test_a_run_saved_in_the_first_schema_reads_back_into_its_mode_result():
    flat = {
        "id": "abc123",
        "mode": "refine",
        "model": "m",
        "provider": "groq",
        "question": "q",
        "status": "ok",
        "answer": "3",
        "turns": [{"index": 1, "content": "## Answer\n3", "answer": "3"}],
        "synthesis": {"content": "## Concise Answer\n3", "answer": "3"},
        "steps": [],
        "final": None,
    }
    run = Run.model_validate(flat)
    assert type(run.result).__name__ == "RefineResult"
    assert run.result.turns[0].answer == "3" and run.result.synthesis is not None
    assert "steps" not in run.result.model_dump()


def test_a_saved_run_of_every_mode_reads_back_with_only_the_results_module_loaded():
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from llamaberry.core.results import Run\n"
        "for mode in sys.argv[1:]:\n"
        "    data = {'mode': mode, 'model': 'm', 'provider': 'groq', 'question': 'q'}\n"
        "    print(type(Run.model_validate(data).result).__name__)\n"
        "print('llamaberry.modes' in sys.modules)\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code, *registry.names()],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.split()
    assert found == [spec.result.__name__ for spec in registry.MODES.values()] + ["False"]


def test_a_mode_is_given_only_the_options_it_takes():
    given = {"turns": 2, "samples": 5, "drafts": None}
    assert registry.own_options("refine", given) == {"turns": 2}
    assert registry.own_options("drafts", given) == {"drafts": None}
    assert registry.own_options("single", given) == {}


def test_a_mode_this_version_does_not_know_is_kept_as_saved():
    data = {"mode": "tree", "model": "m", "provider": "groq", "question": "q"}
    data["result"] = {"mode": "tree", "branches": [1, 2]}
    run = Run.model_validate(data)
    assert json.loads(run.model_dump_json())["result"] == {"mode": "tree", "branches": [1, 2]}


def _internal_imports(path: Path, package: str) -> set[str]:
    """Every llamaberry/ui module `path` imports, anywhere in it (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = package + ("." + base if base else "")
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith(("llamaberry.", "llamaberry_ui.")) and _module_path(name):
                found.add(name)
    return found


def _module_path(name: str) -> Path | None:
    top, _, rest = name.partition(".")
    base = ROOT / "ui" / top if top == "llamaberry_ui" else ROOT / top
    path = base.joinpath(*rest.split(".")) if rest else base
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_no_module_imports_one_that_imports_it_back():
    graph = {}
    for top, folder in (
        ("llamaberry", ROOT / "llamaberry"),
        ("llamaberry_ui", ROOT / "ui" / "llamaberry_ui"),
    ):
        for path in folder.rglob("*.py"):
            if path.name != "__init__.py":
                parts = path.relative_to(folder).with_suffix("").parts
                package = ".".join((top, *parts[:-1]))
                graph[".".join((top, *parts))] = _internal_imports(path, package)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    cycles = [m for m in graph if reaches(m, m, set())]
    assert cycles == []
