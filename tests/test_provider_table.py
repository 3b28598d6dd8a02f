"""The provider table (core/providers.py): the key lookup, the missing-key line, the settings'
defaults and base-URL variables, redaction, prices and the web UI read each provider's row, and
no part outside the providers decides anything by a provider's name."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from llamaberry.core import providers as table
from llamaberry.core.errors import MissingKeyError
from llamaberry.core.prices import PRICED_PROVIDERS, cost_text
from llamaberry.core.redact import KEY_VARIABLES, redact
from llamaberry.core.settings import Settings
from llamaberry.providers.keys import NO_KEY, endpoint_of

ACME = table.Provider(
    name="acme",
    title="Acme",
    choice="acme for Acme's API",
    key_variable="ACME_API_KEY",
    needs_key="hosted",
    missing_key="No Acme key: set ACME_API_KEY.",
    base_url_variable="ACME_BASE_URL",
)


def test_the_key_and_base_url_come_from_the_variables_a_row_names(monkeypatch):
    monkeypatch.setenv("ACME_API_KEY", "acme-secret-key-123")
    monkeypatch.setenv("ACME_BASE_URL", "http://127.0.0.1:9/v1")
    key, url = endpoint_of(ACME, None, None)
    assert (key, url) == ("acme-secret-key-123", "http://127.0.0.1:9/v1")
    assert redact("echo acme-secret-key-123") == "echo [redacted]"  # remembered at once
    assert endpoint_of(ACME, "given-key-4567", "http://h:1/v1") == (
        "given-key-4567",
        "http://h:1/v1",
    )


def test_when_a_key_is_needed_is_the_rows_word(monkeypatch):
    for variable in ("ACME_API_KEY", "ACME_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    # "hosted": only the provider's own API (no base URL) needs one.
    assert endpoint_of(ACME, None, "http://127.0.0.1:9/v1") == (NO_KEY, "http://127.0.0.1:9/v1")
    with pytest.raises(MissingKeyError):
        endpoint_of(ACME, None, None)
    with pytest.raises(MissingKeyError):
        endpoint_of(table.Provider(**{**vars(ACME), "needs_key": "always"}), None, "http://h/v1")
    # A provider that takes no key ignores one given, and any base URL.
    assert endpoint_of(table.LOCAL, "ignored-key-890", "http://h/v1") == (NO_KEY, None)


@pytest.mark.parametrize("row", table.ROWS, ids=lambda row: row.name)
def test_each_row_is_what_the_settings_errors_redaction_and_prices_read(row, monkeypatch):
    if row.key_variable:
        assert row.key_variable in KEY_VARIABLES
    if row.missing_key:
        assert str(MissingKeyError(row.name)) == row.missing_key
    assert (row.name in PRICED_PROVIDERS) == row.billed
    assert (cost_text(None, row.name) == "free (local model)") == (not row.billed)
    if row.base_url_variable:
        monkeypatch.setenv(row.base_url_variable, "http://127.0.0.1:9/v1")
    settings = Settings.load(provider=row.name)
    assert settings.model == row.default_model
    assert {k: getattr(settings, k) for k in row.defaults} == dict(row.defaults)
    assert settings.base_url == ("http://127.0.0.1:9/v1" if row.base_url_variable else None)


# -- nothing outside the providers decides by a provider's name --------------------------------

ROOT = Path(__file__).resolve().parent.parent
# Where a provider may be named: its row, its client's module, the fake server's flavors.
NAMED_HERE = ("llamaberry/core/providers.py", "llamaberry/providers/", "llamaberry/testing/")


def _names_a_provider(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in table.NAMES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_names_a_provider(element) for element in node.elts)
    return False


def decisions_by_name(source: str) -> list[str]:
    """Each place in `source` that decides something by a provider's name: compares with one
    (`==`, `in`, a `match` case), looks one up (`PROVIDERS["local"]`, `.get("groq")`) or picks
    one (`provider="groq"`, `{"provider": "groq"}`). A name in a message or a list of loggers
    decides nothing and is not one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            hit = any(_names_a_provider(side) for side in (node.left, *node.comparators))
        elif isinstance(node, ast.MatchValue):
            hit = _names_a_provider(node.value)
        elif isinstance(node, ast.Subscript):
            hit = _names_a_provider(node.slice)
        elif isinstance(node, ast.Call):
            method = node.func.attr if isinstance(node.func, ast.Attribute) else None
            hit = method == "get" and bool(node.args) and _names_a_provider(node.args[0])
        elif isinstance(node, ast.keyword):
            hit = node.arg == "provider" and _names_a_provider(node.value)
        elif isinstance(node, ast.Dict):
            hit = any(
                isinstance(key, ast.Constant) and key.value == "provider" and _names_a_provider(v)
                for key, v in zip(node.keys, node.values, strict=True)
            )
        else:
            hit = False
        if hit:
            found.append(ast.unparse(node))
    return found


def test_no_part_outside_the_providers_decides_by_a_provider_s_name():
    # What a provider can do is a field of its row (`in_process`, `billed`...), and the one a
    # key asks for is `DEFAULT`: adding a provider then touches none of these files.
    files = [*ROOT.joinpath("llamaberry").rglob("*.py"), *ROOT.joinpath("ui").rglob("*.py")]
    found = {}
    for path in files:
        where = path.relative_to(ROOT).as_posix()
        if where.startswith(NAMED_HERE):
            continue
        decided = decisions_by_name(path.read_text(encoding="utf-8"))
        if decided:
            found[where] = decided
    assert found == {}
    assert len(files) > 80  # the walk saw the tree


def test_the_scan_sees_each_way_of_deciding_by_a_name():
    decides = [
        'if base.provider == "local":\n    acquire(base.model)',  # the web UI held the server so
        'values.update(provider="groq", max_tokens=None)',  # and a typed key asked for Groq so
        'if settings.provider in ("groq", "openai"):\n    pass',
        'match name:\n    case "openai":\n        pass',
        'row = PROVIDERS["local"]',
        'row = PROVIDERS.get("groq")',
        'Settings.load(**{"provider": "openai"})',
    ]
    for source in decides:
        assert decisions_by_name(source), source
    says = [
        '_LOGGERS = ("llamaberry", "groq", "openai")',
        'line = "paste a Groq key, or use --provider openai"',
        'if mode == "single":\n    pass',
        "values.update(provider=DEFAULT.name)",
    ]
    for source in says:
        assert decisions_by_name(source) == [], source


def test_holding_a_provider_that_runs_elsewhere_does_nothing_and_imports_nothing():
    # The web UI holds its provider's server up between runs: only a row that runs in this
    # process has one (the local row), and asking for any other imports no client module.
    assert [row.name for row in table.ROWS if row.in_process] == [table.KEYLESS.name]
    rows = [row.name for row in table.ROWS if not row.in_process]
    code = (
        "import sys\n"
        "from llamaberry.providers import hold\n"
        f"for name in {rows!r}:\n"
        "    hold(name, 'some-model')\n"
        "print(sorted(m for m in sys.modules if m.startswith('llamaberry.providers.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
