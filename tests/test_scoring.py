"""The scorer reads each reply of the corpus as a careful person would."""

from __future__ import annotations

import time

import pytest

from llamaberry.core.scoring import infer_scorer, numbers, score

from .scorer_corpus import CORPUS


def _golds(gold: str | list[str]) -> tuple[str, list[str]]:
    return (gold[0], gold[1:]) if isinstance(gold, list) else (gold, [])


def _same(read: str | None, expected: str, gold: str) -> bool:
    if read is None:
        return False
    if infer_scorer(gold) == "number":
        found = numbers(read)
        return bool(found) and found[0][0] == numbers(expected)[0][0]
    return read.casefold() == expected.casefold()


@pytest.mark.parametrize(
    ("reply", "gold", "reading"),
    [pytest.param(reply, gold, reading, id=name) for name, reply, gold, reading in CORPUS],
)
def test_the_scorer_reads_the_answer_a_person_would(
    reply: str, gold: str | list[str], reading: str
):
    first, aliases = _golds(gold)
    verdict = score(reply, first, also=aliases)
    if reading == "":  # nothing a careful reader would take as an answer
        assert verdict.unreadable and not verdict.correct, verdict
        return
    if infer_scorer(first) in ("contains", "math"):
        # Text and maths: the verdict is what matters; something must have been read.
        assert verdict.predicted is not None, verdict
        assert verdict.correct == (reading == first), (verdict, reading)
        return
    assert _same(verdict.predicted, reading, first), (verdict, reading)
    assert verdict.correct == _same(first, reading, first), (verdict, reading, first)


def test_a_reply_with_no_answer_in_it_is_unreadable_not_just_wrong():
    verdict = score("I am not sure how to approach this one.", "42")
    assert verdict.unreadable and not verdict.correct
    assert not score("It is 41.", "42").unreadable


@pytest.mark.parametrize("bomb", ["2^{2^{40}}", "9^{99999}", "100000!", "10^{10^{10}}", "2**2**64"])
def test_maths_that_would_take_sympy_minutes_is_not_sent_to_it(bomb: str):
    started = time.perf_counter()
    verdict = score(f"$\\boxed{{{bomb}}}$", "x^2+1", "math")
    assert not verdict.correct
    assert time.perf_counter() - started < 5


def test_maths_scoring_works_off_the_main_thread():
    """math-verify's own time limit uses SIGALRM (main thread only); ours is off, so the UI's
    worker threads and an eval's thread score maths too."""
    import threading

    verdicts = []
    thread = threading.Thread(
        target=lambda: verdicts.append(score("$\\boxed{0.5}$", "\\frac{1}{2}", "math"))
    )
    thread.start()
    thread.join()
    assert verdicts and verdicts[0].correct


def test_importing_the_scorer_does_not_import_sympy():
    import subprocess
    import sys

    code = "import llamaberry.core.scoring, sys; print('sympy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
