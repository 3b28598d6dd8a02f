"""Where a provider's key and base URL come from (given, else the environment variables its row
in the provider table names), and the checks a key passes before any request carries it.

Every key found is remembered for redaction at once, so it never reaches a log, an error line
or the history.
"""

from __future__ import annotations

import os

from llamaberry.core.errors import InputError, MissingKeyError
from llamaberry.core.providers import Provider
from llamaberry.core.redact import remember
from llamaberry.core.settings import check_base_url

# Sent where the provider takes no key: the SDKs insist on one.
NO_KEY = "no-key"


def endpoint_of(
    row: Provider, given_key: str | None, given_url: str | None
) -> tuple[str, str | None]:
    """The key a client of the provider `row` sends and its base URL (None: the SDK's own
    default), each given or else from the environment variable the row names; a provider that
    takes neither (no variables in its row) ignores what is given.

    `MissingKeyError` when the row needs a key and none is found: "always", or "hosted" with
    no base URL (the SDK would go to the provider's own API, where a keyless request can only be
    refused; the user almost surely meant a server of their own and forgot the base URL).
    """
    key, source = find_key(given_key, row.key_variable) if row.key_variable else (None, "")
    if not key and row.needs_key == "always":
        raise MissingKeyError(row.name)
    sent = checked_key(key, source) if key else NO_KEY
    url = find_base_url(given_url, row.base_url_variable) if row.base_url_variable else None
    if not key and row.needs_key == "hosted" and url is None:
        raise MissingKeyError(row.name)
    return sent, url


def find_key(given: str | None, variable: str) -> tuple[str | None, str]:
    """The key `given`, else the one in the environment `variable` (None when neither), and
    how an error line names where it came from."""
    return given or os.environ.get(variable), "the API key" if given else variable


def find_base_url(given: str | None, variable: str) -> str | None:
    """The base URL `given`, else the one in the environment `variable`, checked (None: the
    SDK's own default)."""
    url = given or os.environ.get(variable) or None
    remember(url)  # it may carry credentials (https://user:pass@host)
    check_base_url(url, "the base URL" if given else variable)
    return url


def checked_key(key: str, source: str) -> str:
    """`key`, remembered for redaction; `InputError` at once if it cannot be sent as a header."""
    remember(key)
    stripped = key.strip()
    if not stripped:
        raise InputError(f"{source} is blank; set it to your key.")
    if stripped != key:
        where = "ends" if key.startswith(stripped) else "starts" if key.endswith(stripped) else ""
        what = "a newline" if "\n" in key.replace(stripped, "") else "whitespace"
        raise InputError(
            f"{source} {where or 'starts and ends'} with {what}; remove it (the provider would "
            "refuse the key, and no request was sent)."
        )
    bad = next((c for c in key if not 0x21 <= ord(c) <= 0x7E), None)
    if bad is not None:
        raise InputError(
            f"{source} contains {'a space' if bad == ' ' else f'the character U+{ord(bad):04X}'}, "
            "which no API key has; check that it was copied whole (no request was sent)."
        )
    return key
