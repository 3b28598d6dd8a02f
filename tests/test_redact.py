"""The one redaction function every sink uses."""

from __future__ import annotations

from llamaberry.core.redact import (
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
            assert not held or any(s.startswith(held) for s in secrets()), (size, held)
            assert "".join(out) + stream.held == text[: at + size].replace(key, REDACTED)
        out.append(stream.flush())
        assert "".join(out) == redact(text) == text.replace(key, REDACTED), size
        assert most <= len(key) - 1
    # Text that could not begin a key goes out the moment it is fed.
    stream = RedactStream()
    assert stream.feed("nothing to hold.") == "nothing to hold." and stream.held == ""
