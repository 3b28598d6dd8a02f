"""No code of ours reaches into another library's private parts: a renamed private attribute of an
SDK, httpx or aiohttp would break every call of a user who installed a newer release.

Every attribute access whose name starts with `_` (not a dunder) in llamaberry/ and ui/ is found
by walking the syntax trees; one on `self` or `cls` is ours by construction, and the few on our
own objects under another name are listed below by file, expression and attribute. Anything else
fails, as does `getattr`/`setattr`/`hasattr` with a private name, and importing a private module
of the SDKs or their HTTP libraries.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Our own objects, reached by a private name from outside their class (file, object, attribute).
OURS = {
    ("llamaberry/core/results.py", "ModeResult", "_types"),
    ("llamaberry/core/settings.py", "settings", "_embedded"),
    ("llamaberry/engine.py", "run", "_exception"),
    ("llamaberry/providers/local.py", "server", "_users"),
    ("llamaberry/providers/local.py", "super()", "_make_sdk"),
    ("llamaberry/run/runner.py", "run", "_exception"),
    ("llamaberry/serve/responses.py", "super()", "_route"),
    ("llamaberry/testing/server.py", "request", "_answered"),
    ("ui/llamaberry_ui/views.py", "view", "_finish_call"),
    ("ui/llamaberry_ui/views.py", "view", "_finish_run"),
}
THIRD_PARTY = ("groq", "openai", "httpx", "httpx2", "httpcore", "aiohttp", "httpx_aiohttp", "anyio")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_accesses(source: str, where: str) -> list[tuple[str, str, str]]:
    """(file, object, attribute) of every private access in `source` that is not on `self`
    or `cls`; for a private import, (file, "import", module)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = ast.unparse(node.value)
            if base not in ("self", "cls"):
                found.append((where, base, node.attr))
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in (
            "getattr",
            "setattr",
            "hasattr",
            "delattr",
        ):
            name = node.args[1] if len(node.args) > 1 else None
            if (
                isinstance(name, ast.Constant)
                and isinstance(name.value, str)
                and _private(name.value)
                and ast.unparse(node.args[0]) not in ("self", "cls")
            ):
                found.append((where, ast.unparse(node.args[0]), name.value))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules.append(node.module)
                modules += [f"{node.module}.{a.name}" for a in node.names]
            for module in modules:
                parts = module.split(".")
                if parts[0] in THIRD_PARTY and any(_private(p) for p in parts[1:]):
                    found.append((where, "import", module))
        if (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in ("importlib.import_module", "import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            # A module named to importlib: "groq._models".
            parts = node.args[0].value.split(".")
            if parts[0] in THIRD_PARTY and any(_private(p) for p in parts[1:]):
                found.append((where, "import", node.args[0].value))
    return found


def scan() -> tuple[int, list[tuple[str, str, str]]]:
    files = sorted([*ROOT.joinpath("llamaberry").rglob("*.py"), *ROOT.joinpath("ui").rglob("*.py")])
    found = []
    for path in files:
        found += private_accesses(path.read_text(), path.relative_to(ROOT).as_posix())
    return len(files), found


def test_no_private_attribute_of_another_library_is_touched():
    files, found = scan()
    assert files > 50
    strangers = sorted(set(found) - OURS)
    assert not strangers, f"private names of objects that are not ours: {strangers}"


def test_the_list_of_our_own_private_accesses_is_current():
    # An entry whose access is gone is removed, so the list never covers for a new one.
    _, found = scan()
    assert set(found) >= OURS, sorted(OURS - set(found))


def test_the_scan_finds_what_the_old_transport_did():
    # The calls the old transport made into the SDKs (issue 26), each caught.
    old = """
import importlib
from groq._models import FinalRequestOptions
models = importlib.import_module("openai._models")
client._transport = Transport()
template = sdk._build_request(options)
transport = sdk._client._transport_for_url(url)
error = sdk._make_status_error_from_response(response)
getattr(response, "_content", None)
self._own = 1
"""
    found = private_accesses(old, "x.py")
    assert {(base, attr) for _, base, attr in found} == {
        ("import", "groq._models"),
        ("import", "groq._models.FinalRequestOptions"),
        ("import", "openai._models"),
        ("client", "_transport"),
        ("sdk", "_build_request"),
        ("sdk", "_client"),
        ("sdk._client", "_transport_for_url"),
        ("sdk", "_make_status_error_from_response"),
        ("response", "_content"),
    }
