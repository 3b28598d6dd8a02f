"""One redaction function for every place text leaves the process.

Every sink (an error line, a saved run, an export, eval's results, the web page, `--json`)
passes its text through `redact()`. It blanks out every API key this process knows about: the
ones a chat client was really built with (explicit or from the environment), the keys in the
SDKs' own environment variables, any credentials written into a URL (`user:key@host`), and
credentials in a basic-auth header (`Basic <base64>`). Text is redacted before it is cut to a
length, so a key that straddles the cut cannot leak its first part.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from llamaberry.core.providers import ROWS

REDACTED = "[redacted]"
# Shorter strings are not keys worth hiding (and blanking "no-key" or "k" would mangle text).
MIN_SECRET = 8
# The SDKs read these (each provider's row names its own); a key set here is in use even when
# nobody passed it to us.
KEY_VARIABLES = tuple(row.key_variable for row in ROWS if row.key_variable)
_URL_VARIABLES = (
    *(row.base_url_variable for row in ROWS if row.base_url_variable),
    "LLAMABERRY_BASE_URL",
)
# scheme://userinfo@ : whatever sits before the @ of a URL's authority is a credential.
# (A literal start lets the regex engine jump between "://"s instead of trying every position.)
_USERINFO = re.compile(r"://[^/@\s\"'<>]+@")
# Credentials sent as HTTP basic auth (`Authorization: Basic dXNlcjpwYXNz`), which a server
# may echo back in an error: the base64 of `user:password`.
# Only a token that decodes to printable `name:secret` counts, so prose ("basic idea") stays.
_BASIC = re.compile(r"\b(?:[Bb]asic|BASIC)\s+([A-Za-z0-9+/]{8,}={0,2})")

_known: set[str] = set()
_lock = threading.Lock()
# The last answer of `secrets()` and what it was worked out from (what was remembered, and the
# variables' values): streamed text asks for every piece.
_last: tuple[tuple[int, tuple[str | None, ...]], list[str]] | None = None

T = TypeVar("T")


def remember(secret: str | None) -> None:
    """Add `secret` (a key, or a URL carrying credentials) to what `redact()` blanks out."""
    guard_logs()
    with _lock:
        for value in _variants(secret):
            _known.add(value)


def _variants(secret: str | None) -> list[str]:
    if not secret:
        return []
    if "://" not in secret:
        found = [secret, secret.strip()]
    else:  # a URL: only its credentials are secret, the rest names where a failure happened
        found = []
        try:
            parts = urlsplit(secret.strip())
        except ValueError:
            parts = None
        if parts is not None and "@" in parts.netloc:
            userinfo = parts.netloc.rsplit("@", 1)[0]
            found += [userinfo, unquote(userinfo)]
            # As a basic-auth header carries them (httpx sends URL credentials that way).
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            found.append(base64.b64encode(pair.encode()).decode("ascii"))
            for piece in (parts.username, parts.password):
                if piece:
                    found += [piece, unquote(piece)]
    return [value for value in found if len(value.strip()) >= MIN_SECRET]


def secrets() -> list[str]:
    """Every secret known now, longest first (so a key is blanked before any part of it)."""
    global _last
    environ = tuple(os.environ.get(name) for name in (*KEY_VARIABLES, *_URL_VARIABLES))
    with _lock:
        basis = (len(_known), environ)  # _known only grows
        if _last is not None and _last[0] == basis:
            return list(_last[1])
        known = set(_known)
    for value in environ:
        known.update(_variants(value))
    found = sorted(known, key=len, reverse=True)
    with _lock:
        _last = (basis, found)
    return list(found)


def redact(text: str) -> str:
    """`text` with every known key and every URL's credentials replaced by [redacted]."""
    return _redact(text, secrets()) if text else text


def _redact(text: str, known: list[str]) -> str:
    if not text:
        return text
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "asic" in text or "ASIC" in text:
        text = _BASIC.sub(_blank_credentials, text)
    if (
        "://" not in text or "@" not in text
    ):  # the regex is the slow part: skip it when it can't match
        return text
    return _USERINFO.sub("://" + REDACTED + "@", text)


def _blank_credentials(found: re.Match[str]) -> str:
    token = found[1]
    try:
        pair = base64.b64decode(token, validate=True).decode("ascii")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return found[0]
    if ":" not in pair or not pair.isprintable():
        return found[0]
    return found[0][: found.start(1) - found.start(0)] + REDACTED


def secret_cut(text: str, cut: int | None = None, known: list[str] | None = None) -> int:
    """Where streamed `text` may be cut, so that what comes before holds no part of a known
    secret the text after it could complete: `cut` (the end by default) moved back over any
    tail that could begin a secret, then to the start of any whole secret it would split.

    What lies after the cut is at most one secret's length minus one character (more only
    where known secrets overlap one another), and nothing at all when the text's end could
    not begin a secret. `known` is `secrets()` when the caller has it already."""
    known = secrets() if known is None else known
    cut = len(text) if cut is None else cut
    for secret in known:
        cut = min(cut, len(text) - _could_begin(text, secret))
    moved = cut < len(text)  # nothing held back: no key can run past the cut
    while moved:  # a key shown in two halves would be redacted in neither
        moved = False
        for secret in known:
            start = text.find(secret, max(0, cut - len(secret) + 1))
            if -1 < start < cut:
                cut, moved = start, True
    return cut


def _could_begin(text: str, secret: str) -> int:
    """The length of the longest end of `text` that is the start of `secret` but not all of
    it (0 when there is none)."""
    first = secret[0]
    at = text.find(first, max(0, len(text) - len(secret) + 1))
    while at != -1:
        if secret.startswith(text[at:]):
            return len(text) - at
        at = text.find(first, at + 1)
    return 0


class RedactStream:
    """Streamed text redacted piece by piece, a key split between two pieces included.

    A key whose first half ends one piece and whose rest begins the next is in neither piece
    whole, so redacting each alone lets both halves through. The end of what was fed that
    could begin a known key is held back until the next piece (or `flush()`) shows what it
    was; every other character goes out at once.
    """

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, text: str) -> str:
        """What of everything fed so far can go out now, redacted."""
        if not text:
            return ""
        text = self._pending + text
        known = secrets()  # gathered once for the piece
        cut = secret_cut(text, known=known)
        self._pending = text[cut:]
        return _redact(text[:cut], known)

    @property
    def held(self) -> str:
        """What is held back now (not redacted yet: never send it as it is)."""
        return self._pending

    def flush(self) -> str:
        """The rest, redacted: the text has ended (or something else is about to be written
        after it)."""
        text, self._pending = self._pending, ""
        return redact(text)


def redact_data(value: T) -> T:
    """`value` (strings, lists, tuples and dicts of them, nested) with every string redacted."""
    # The secrets are gathered once for the whole value, not once per string in it.
    return _redact_data(value, secrets())


def _redact_data(value: T, known: list[str]) -> T:
    if isinstance(value, str):
        return _redact(value, known)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {_redact_data(k, known): _redact_data(v, known) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list | tuple):
        return type(value)(_redact_data(v, known) for v in value)  # type: ignore[return-value]
    return value


def redact_model(model: T) -> T:
    """A copy of a pydantic model whose every string field has been redacted."""
    # Most runs hold nothing secret: one scan of their JSON decides, without walking them.
    text = model.model_dump_json()  # type: ignore[attr-defined]
    if redact(text) == text:
        return model
    dumped: Any = model.model_dump()  # type: ignore[attr-defined]
    cleaned = redact_data(dumped)
    return type(model).model_validate(cleaned)  # type: ignore[attr-defined]


# The SDKs and httpx log every request's URL (credentials included) and the errors they raise.
_LOGGERS = (
    "llamaberry",
    "httpx",
    "httpx2",
    "groq",
    "groq._base_client",
    "openai",
    "openai._base_client",
)


class RedactingFilter(logging.Filter):
    """Blank every known secret out of a log record before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message (and traceback) with `redact()`; never drop it."""
        _redact_record(record)
        return True


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string is the logger's problem, not ours
        return
    record.msg, record.args = redact(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)


def _ours(name: str) -> bool:
    """Whether a logger called `name` is one of `_LOGGERS` or a child of one."""
    return any(name == root or name.startswith(root + ".") for root in _LOGGERS)


_factory_lock = threading.Lock()
_factory_installed = False


def guard_logs() -> None:
    """Redact every record of the loggers that can see a key or a URL, their children's too.

    A filter on a logger sees only the records logged on that very logger, not those of its
    children (`llamaberry.serve`) that pass up to its handlers; the record factory sees every
    record when it is made. It is installed once, wrapping whatever factory was there.
    """
    global _factory_installed
    with _factory_lock:
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def redacting_factory(name: str, *args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(name, *args, **kwargs)
            if _ours(name):
                _redact_record(record)
            return record

        logging.setLogRecordFactory(redacting_factory)
        _factory_installed = True


guard_logs()  # keys from the environment are secrets from the start
