"""The one redaction function every sink uses."""

from __future__ import annotations

import base64

from llamaberry.core.redact import (
    MIN_FRAGMENT,
    MIN_FRAGMENT_SOURCE,
    REDACTED,
    RedactStream,
    redact,
    redact_data,
    redact_model,
    remember,
    secrets,
)
from llamaberry.core.results import Run


def test_a_key_in_the_environment_is_blanked_without_being_passed(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-environment-only-12345")
    assert redact("Bearer sk-environment-only-12345 refused") == f"Bearer {REDACTED} refused"


def test_a_remembered_key_is_blanked_with_and_without_its_stray_whitespace():
    remember("gsk_remembered_key_abcdef\n")
    assert redact("key gsk_remembered_key_abcdef!") == f"key {REDACTED}!"


def test_url_credentials_are_blanked_but_the_host_is_kept():
    text = "could not reach https://me:hunter2@example.com/v1 or http://tok@h:8080"
    assert redact(text) == (
        f"could not reach https://{REDACTED}@example.com/v1 or http://{REDACTED}@h:8080"
    )


def test_a_remembered_url_blanks_its_password_wherever_it_appears_alone():
    remember("http://alice:pa55word-remembered@10.0.0.1:8000/v1")
    assert redact("password pa55word-remembered echoed") == f"password {REDACTED} echoed"
    assert redact("10.0.0.1:8000 stays") == "10.0.0.1:8000 stays"


def test_short_strings_are_never_treated_as_keys():
    remember("k")
    remember("no-key")
    assert redact("a kind of no-key answer") == "a kind of no-key answer"


def test_nested_data_and_models_are_redacted_and_untouched_ones_are_returned_as_is(monkeypatch):
    monkeypatch.setenv("GROQ_API_KEY", "gsk_nested_canary_000111")
    data = {"a": ["x gsk_nested_canary_000111", ("gsk_nested_canary_000111",)], "n": 3}
    assert redact_data(data) == {"a": [f"x {REDACTED}", (REDACTED,)], "n": 3}
    clean = Run(mode="single", model="m", provider="groq", question="q")
    assert redact_model(clean) is clean
    dirty = Run(mode="single", model="m", provider="groq", question="gsk_nested_canary_000111?")
    assert redact_model(dirty).question == f"{REDACTED}?"


def test_a_stream_holds_back_only_what_could_begin_a_key_and_at_most_a_key_less_a_character():
    key = "zq9_streamed_canary_7788"
    remember(key)
    text = f"plain words, then {key}, then zq9_ and z and more plain words."
    for size in (1, 2, 5, 9, len(key)):
        stream = RedactStream()
        out, most = [], 0
        for at in range(0, len(text), size):
            out.append(stream.feed(text[at : at + size]))
            most = max(most, len(stream.held))
            # Every character that could not begin a known key is out already, redacted.
            held = stream.held
            assert all(s != held for s in secrets()), held
            # (A part of one: the start of a key, or what could still become a run of one.)
            assert not held or any(held in s for s in secrets()), (size, held)
            assert "".join(out) + stream.held == text[: at + size].replace(key, REDACTED)
        out.append(stream.flush())
        assert "".join(out) == redact(text) == text.replace(key, REDACTED), size
        assert most <= len(key) - 1
    # Text that could not begin a key goes out the moment it is fed.
    stream = RedactStream()
    assert stream.feed("nothing to hold.") == "nothing to hold." and stream.held == ""


# -- what is left of a key ---------------------------------------------------------------------

# 56 characters, as Groq's keys are, made up (no service issued it); no ten of them repeat.
LONG_KEY = "gsk_FakeTestKeyNotReal_a1B2c3D4e5F6g7H8i9J0kLmNoPqRsTuVw"
# Each way an upstream, a proxy or a model may show most of the key.
NEARLY = {
    "less its last character": LONG_KEY[:-1],
    "less its first character": LONG_KEY[1:],
    "its first 40 characters": LONG_KEY[:40],
    "a middle run of 16": LONG_KEY[20:36],
    "one character changed in the middle": LONG_KEY[:28] + "#" + LONG_KEY[29:],
    "its last run of MIN_FRAGMENT": LONG_KEY[-MIN_FRAGMENT:],
}


def runs_of(secret: str, text: str, size: int = MIN_FRAGMENT) -> list[str]:
    """Every `size` characters of `secret` together that `text` shows."""
    return [
        secret[i : i + size] for i in range(len(secret) - size + 1) if secret[i : i + size] in text
    ]


def test_most_of_a_key_is_blanked_as_the_key_is():
    remember(LONG_KEY)
    for how, shown in NEARLY.items():
        text = f"Invalid API Key provided: {shown} (check it)."
        clean = redact(text)
        assert runs_of(LONG_KEY, clean) == [], (how, clean)
        assert clean.startswith("Invalid API Key provided: [redacted]") and clean.endswith(
            " (check it)."
        ), (how, clean)
    # The one character that was changed is all that shows between the two blanked halves.
    assert redact(NEARLY["one character changed in the middle"]) == f"{REDACTED}#{REDACTED}"
    # Glued to other text, the run alone is blanked, and as far as it goes.
    assert redact(f"x{LONG_KEY[:-1]}y") == f"x{REDACTED}y"
    assert redact(f"key={LONG_KEY[5:30]}&next=1") == f"key={REDACTED}&next=1"


def test_text_that_only_shares_a_short_run_with_a_key_is_kept():
    remember(LONG_KEY)
    short = LONG_KEY[10 : 10 + MIN_FRAGMENT - 1]
    for text in (
        "Groq keys begin gsk_ and are secret.",
        f"six in common: {LONG_KEY[4:10]}, then {LONG_KEY[30:36]}",
        f"nine, one short of a run: {short}",
        "A plain sentence about strawberries, with 3 r's in it, stays as it is.",
    ):
        assert redact(text) == text


def test_a_short_secret_is_blanked_whole_and_never_in_part():
    assert MIN_FRAGMENT_SOURCE > 15
    # A base-URL password of 8 characters, one of 15, and a user name: whole only.
    remember("https://service-account-name:pa55w0rd@gateway.example/v1")
    remember("https://other:Fifteen-chars-1@gateway.example/v1")
    assert redact("pa55w0rd and Fifteen-chars-1") == f"{REDACTED} and {REDACTED}"
    kept = "pa55w0r, a55w0rd, Fifteen-chars, service-account and the service-account-nam"
    assert redact(kept) == kept


def test_a_long_url_password_is_blanked_in_part_too():
    password = "Zq3Xv8Ln2Wc7Rt5Ym9Kd"
    remember(f"https://me:{password}@gateway.example/v1")
    assert redact(f"denied for {password[:-1]}.") == f"denied for {REDACTED}."


def test_a_run_of_a_key_split_between_streamed_pieces_is_held_and_blanked():
    remember(LONG_KEY)
    longest = max(map(len, secrets()))
    text = (
        f"The key {LONG_KEY[1:]} was refused; {LONG_KEY[:40]} too, and {NEARLY['one character changed in the middle']}"
        f" then gsk_ and {LONG_KEY[4:10]} and plain words to end."
    )
    whole = redact(text)
    assert runs_of(LONG_KEY, whole) == []
    for size in (1, 2, 3, 4, 7, MIN_FRAGMENT - 1, MIN_FRAGMENT, 16, 57):
        stream = RedactStream()
        out, most = [], 0
        for at in range(0, len(text), size):
            out.append(stream.feed(text[at : at + size]))
            most = max(most, len(stream.held))
            # What was said holds no run of the key, and all of it stays said.
            assert runs_of(LONG_KEY, "".join(out)) == [], (size, out)
            assert not stream.held or any(stream.held in s for s in secrets()), size
        out.append(stream.flush())
        assert "".join(out) == whole, size
        assert most <= longest, (size, most)


def test_a_short_secret_inside_a_run_of_a_long_one_does_not_split_it():
    # Blanked first, the short one would leave the run's last characters, too few to be a run.
    key = "Pb4Nq8Vs2Lx6Hz0Jt3Wm"
    remember(key)
    remember(key[:15])
    assert redact(f"less one: {key[:-1]}.") == f"less one: {REDACTED}."


def test_a_stream_never_holds_back_more_than_the_longest_secret():
    # A secret that repeats itself: its runs overlap one another as far as the text goes.
    remember("http://someone:" + "Ab3" * 7 + "@gateway.example/v1")
    longest = max(map(len, secrets()))
    for size in (1, 4, 9, 64):
        stream = RedactStream()
        for at in range(0, 3000, size):
            said = stream.feed(("Ab3" * 1000)[at : at + size])
            assert len(stream.held) <= longest, (size, at)
            assert "Ab3Ab3Ab3A" not in said


def test_most_of_a_basic_auth_token_is_blanked_but_not_what_encodes_the_user_name():
    remember("https://gateway-user:Mk8Rf3Ws6Qp1Zn4Tx7@gw.example/v1")
    token = base64.b64encode(b"gateway-user:Mk8Rf3Ws6Qp1Zn4Tx7").decode()
    # What encodes "gateway-user:" alone stays: it tells nothing of the password.
    assert redact(f"echoed {token[:-3]}!") == f"echoed {token[:16]}{REDACTED}!"
    # Another password of the same user begins with the same 16 characters.
    other = base64.b64encode(b"gateway-user:another-one").decode()
    assert other[:16] == token[:16]
    assert redact(f"echoed {other[:-1]}!") == f"echoed {other[:-1]}!"
