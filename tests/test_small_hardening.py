"""Two small holes: a question that is not UTF-8, and log records of our child loggers."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from llamaberry.core.redact import REDACTED, remember
from llamaberry.testing import FakeServer

KEY = "gsk_child_logger_secret_93be11"


def test_a_question_that_is_not_utf8_is_a_usage_error_and_nothing_is_sent(
    fake_server: FakeServer, tmp_path
):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GROQ_", "LLAMABERRY_"))}
    env.update(
        GROQ_API_KEY=KEY,
        GROQ_BASE_URL=fake_server.groq_base_url,
        LLAMABERRY_HOME=str(tmp_path),
        LC_ALL="C.UTF-8",
    )
    for command in (["ask"], ["compare", "--modes", "single,refine"]):
        done = subprocess.run(
            [sys.executable, "-m", "llamaberry", *command, b"caf\xe9 \xff?", "--json"],
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        stderr = done.stderr.decode()
        assert "Traceback" not in stderr and "TypeError" not in stderr
        assert "QUESTION" in stderr and "not UTF-8" in stderr
        assert done.stdout == b""
    assert fake_server.requests == []


@pytest.mark.parametrize("name", ["llamaberry.ui", "llamaberry.serve", "llamaberry.a.b.c"])
def test_a_child_loggers_records_are_redacted_where_every_handler_sees_them(name, caplog):
    remember(KEY)
    logger = logging.getLogger(name)  # made after the guard was put in place
    with caplog.at_level(logging.INFO):
        logger.warning("upstream said %s", KEY)
        try:
            raise RuntimeError(f"bad key {KEY}")
        except RuntimeError:
            logger.exception("failed with %r", {"key": KEY})
    text = caplog.text
    assert KEY not in text, text
    assert text.count(REDACTED) >= 3
    assert [r.name for r in caplog.records] == [name, name]


def test_other_loggers_are_left_alone(caplog):
    remember(KEY)
    with caplog.at_level(logging.INFO):
        logging.getLogger("someone.else").warning("%s", "plain text")
    assert caplog.records[0].args == ("plain text",)
