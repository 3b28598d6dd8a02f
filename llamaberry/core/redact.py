"""One redaction function for every place text leaves the process.

Every sink (an error line, a saved run, an export, eval's results, the web page, `--json`)
passes its text through `redact()`. It blanks out every API key this process knows about: the
ones a chat client was really built with (explicit or from the environment), the keys in the
SDKs' own environment variables, any credentials written into a URL (`user:key@host`), and
credentials in a basic-auth header (`Basic <base64>`). Text is redacted before it is cut to a
length, so a key that straddles the cut cannot leak its first part.

A key shown less a character, or cut short, or with one character changed is nearly the key: so
for every known secret of at least MIN_FRAGMENT_SOURCE characters, each run of at least
MIN_FRAGMENT characters of it found in the text is blanked too, taken as far as it goes.
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
# A run of this many characters of a known secret is blanked wherever it appears. Ten is long
# enough that ordinary text never holds one by chance (a random key's ten characters are about
# 60 bits; what keys share, "gsk_" or "sk-proj-", is shorter), and short enough that what is
# left beside a blank, nine characters at most, leaves a key's 40 or more to guess.
MIN_FRAGMENT = 10
# Only secrets this long are blanked in part: a shorter one (a base-URL password of a few
# characters) is blanked whole only, since its pieces are ordinary words.
MIN_FRAGMENT_SOURCE = 16
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
# The remembered secrets that are blanked in part too (keys and passwords, not user names).
_sources: set[str] = set()
_lock = threading.Lock()
# The last answer of `known()` and what it was worked out from (what was remembered, and the
# variables' values): streamed text asks for every piece.
_last: tuple[tuple[int, int, tuple[str | None, ...]], Known] | None = None

T = TypeVar("T")

# A run of MIN_FRAGMENT characters of a secret holds one of its NEEDLE-character pieces that
# start STRIDE apart (NEEDLE + STRIDE - 1 == MIN_FRAGMENT), so the text is searched for those
# few pieces (`str.find`, at C speed) and each one found is grown into the run around it.
_NEEDLE = MIN_FRAGMENT // 2
_STRIDE = MIN_FRAGMENT - _NEEDLE + 1


def remember(secret: str | None) -> None:
    """Add `secret` (a key, or a URL carrying credentials) to what `redact()` blanks out."""
    guard_logs()
    with _lock:
        for value, in_part in _variants(secret):
            _known.add(value)
            if in_part:
                _sources.add(value)


def _variants(secret: str | None) -> list[tuple[str, bool]]:
    """The forms of `secret` to blank, each with whether its runs are blanked too."""
    if not secret:
        return []
    if "://" not in secret:
        found = [(secret, True), (secret.strip(), True)]
    else:  # a URL: only its credentials are secret, the rest names where a failure happened
        found = []
        try:
            parts = urlsplit(secret.strip())
        except ValueError:
            parts = None
        if parts is not None and "@" in parts.netloc:
            userinfo = parts.netloc.rsplit("@", 1)[0]
            found += [(userinfo, False), (unquote(userinfo), False)]
            # As a basic-auth header carries them (httpx sends URL credentials that way).
            name = f"{unquote(parts.username or '')}:".encode()
            pair = base64.b64encode(name + unquote(parts.password or "").encode()).decode()
            # Its runs are blanked only past what encodes the user name alone, which any
            # other password of the same user shares.
            found += [(pair, False), (pair[len(name) // 3 * 4 :], True)]
            # A user name is blanked whole: its runs may be ordinary words.
            for piece, in_part in ((parts.username, False), (parts.password, True)):
                if piece:
                    found += [(piece, in_part), (unquote(piece), in_part)]
    return [(value, in_part) for value, in_part in found if len(value.strip()) >= MIN_SECRET]


class Fragments:
    """Runs of at least MIN_FRAGMENT characters of the long secrets, found in text."""

    def __init__(self, sources: list[str]) -> None:
        sources = [s for s in sources if len(s) >= MIN_FRAGMENT_SOURCE]
        self.needles: dict[str, list[tuple[str, int]]] = {}
        for secret in sources:
            for at in range(0, len(secret) - _NEEDLE + 1, _STRIDE):
                self.needles.setdefault(secret[at : at + _NEEDLE], []).append((secret, at))
        # Every start of a run that is not one yet: what a streamed text's end could still become.
        self.openings = frozenset(
            secret[at : at + size]
            for secret in sources
            for at in range(len(secret) - MIN_FRAGMENT + 1)
            for size in range(1, MIN_FRAGMENT)
        )

    def runs(self, text: str) -> list[tuple[int, int]]:
        """Where `text` holds runs of a secret (start, end), overlapping ones joined, in order."""
        if len(text) < MIN_FRAGMENT:  # most streamed pieces
            return []
        found: dict[tuple[str, int], list[tuple[int, int]]] = {}  # by secret and alignment
        for needle, places in self.needles.items():
            at = text.find(needle)
            while at != -1:
                for secret, offset in places:
                    seen = found.setdefault((secret, at - offset), [])
                    if not any(start <= at < end for start, end in seen):
                        seen.append(_grown(text, at, secret, offset))
                at = text.find(needle, at + 1)
        return _joined([r for runs in found.values() for r in runs if r[1] - r[0] >= MIN_FRAGMENT])

    def opening(self, text: str) -> int:
        """The length of the longest end of `text` that could still become a run (less than
        MIN_FRAGMENT characters, 0 when none)."""
        for size in range(min(MIN_FRAGMENT - 1, len(text)), 0, -1):
            if text[-size:] in self.openings:
                return size
        return 0


def _joined(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """`spans` (start, end) in order, those that overlap made one."""
    joined: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if joined and start < joined[-1][1]:
            joined[-1] = (joined[-1][0], max(end, joined[-1][1]))
        else:
            joined.append((start, end))
    return joined


def _grown(text: str, at: int, secret: str, offset: int) -> tuple[int, int]:
    """The run of `secret` in `text` around `text[at]` == `secret[offset]`, as far as it goes."""
    start, first = at, offset
    while start and first and text[start - 1] == secret[first - 1]:
        start, first = start - 1, first - 1
    end, last = at + _NEEDLE, offset + _NEEDLE
    while end < len(text) and last < len(secret) and text[end] == secret[last]:
        end, last = end + 1, last + 1
    return start, end


class Known:
    """What redaction knows at one moment: every secret, longest first (so a key is blanked
    before any part of it), and the runs of the long ones."""

    def __init__(self, whole: list[str], sources: list[str]) -> None:
        self.whole = whole
        self.fragments = Fragments(sources)
        self.longest = max(map(len, whole), default=0)


def known() -> Known:
    """The secrets known now (the same object while nothing changed)."""
    global _last
    environ = tuple(os.environ.get(name) for name in (*KEY_VARIABLES, *_URL_VARIABLES))
    with _lock:
        basis = (len(_known), len(_sources), environ)  # both only grow
        if _last is not None and _last[0] == basis:
            return _last[1]
        whole, sources = set(_known), set(_sources)
    for value in environ:
        for variant, in_part in _variants(value):
            whole.add(variant)
            if in_part:
                sources.add(variant)
    found = Known(sorted(whole, key=len, reverse=True), sorted(sources))
    with _lock:
        _last = (basis, found)
    return found


def secrets() -> list[str]:
    """Every secret known now, longest first (so a key is blanked before any part of it)."""
    return list(known().whole)


def redact(text: str) -> str:
    """`text` with every known key, every run of one (see MIN_FRAGMENT) and every URL's
    credentials replaced by [redacted]."""
    return _redact(text, known()) if text else text


def _redact(text: str, state: Known) -> str:
    if not text:
        return text
    # Whole secrets and runs are found in the text as it came, and blanked together: a short
    # secret blanked first could split a run of a long one into pieces too short to be seen.
    spans = state.fragments.runs(text)
    for secret in state.whole:
        at = text.find(secret)
        while at != -1:
            spans.append((at, at + len(secret)))
            at = text.find(secret, at + 1)
    if spans:
        kept, last = [], 0
        for start, end in _joined(spans):
            kept.append(text[last:start])
            last = end
        text = REDACTED.join(kept) + REDACTED + text[last:]
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


def secret_cut(text: str, cut: int | None = None, state: Known | None = None) -> int:
    """Where streamed `text` may be cut, so that what comes before holds no part of a known
    secret the text after it could complete: `cut` (the end by default) moved back over any
    end that could begin a secret or still become a run of one (MIN_FRAGMENT), then to the
    start of any whole secret or run it would split.

    What lies after the cut is never more than the longest secret: a key less one character,
    or a run of a secret still open at the end; and nothing at all when the text's end could
    not begin a secret or a run. (Only where secrets, or a secret's repeats, overlap one
    another would the cut go further back; it stops there, and a part shorter than a run may
    show beside a blank.) `state` is `known()` when the caller has it already."""
    state = known() if state is None else state
    end = len(text)
    cut = end if cut is None else cut
    floor = min(cut, end - state.longest)
    for secret in state.whole:
        cut = min(cut, end - _could_begin(text, secret))
    cut = min(cut, end - state.fragments.opening(text))
    if cut == end:  # nothing held back: no key or run can go on past the cut
        return cut
    runs = state.fragments.runs(text)
    moved = True
    while moved and cut > floor:  # a key or a run shown in two halves is redacted in neither
        moved = False
        for secret in state.whole:
            start = text.find(secret, max(0, cut - len(secret) + 1))
            if -1 < start < cut:
                cut, moved = start, True
        for start, stop in runs:
            if start < cut < stop:
                cut, moved = start, True
    return max(cut, floor)


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
    could begin a known key, or still become a run of one, is held back until the next piece
    (or `flush()`) shows what it was; every other character goes out at once.
    """

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, text: str) -> str:
        """What of everything fed so far can go out now, redacted."""
        if not text:
            return ""
        text = self._pending + text
        state = known()  # gathered once for the piece
        cut = secret_cut(text, state=state)
        self._pending = text[cut:]
        return _redact(text[:cut], state)

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
    return _redact_data(value, known())


def _redact_data(value: T, state: Known) -> T:
    if isinstance(value, str):
        return _redact(value, state)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {_redact_data(k, state): _redact_data(v, state) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list | tuple):
        return type(value)(_redact_data(v, state) for v in value)  # type: ignore[return-value]
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
