"""The provider table (core/providers.py): the key lookup, the missing-key line, the settings'
defaults and base-URL variables, redaction and prices read each provider's row."""

from __future__ import annotations

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
