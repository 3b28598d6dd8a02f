"""Where a provider's key and base URL come from (given, else the SDK's own environment
variable), and the checks a key passes before any request carries it.

Every key found is remembered for redaction at once, so it never reaches a log, an error line
or the history.
"""

from __future__ import annotations

import os

from llamaberry.core.errors import InputError
from llamaberry.core.redact import remember
from llamaberry.core.settings import check_base_url


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
