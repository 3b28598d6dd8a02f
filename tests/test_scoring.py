"""The scorer reads each reply of the corpus as a careful person would."""

from __future__ import annotations

from fractions import Fraction

import pytest

from llamaberry.core.scoring import infer_scorer, numbers, score

from .scorer_corpus import CORPUS


def _same(read: str | None, expected: str, gold: str) -> bool:
    if read is None:
        return False
    if infer_scorer(gold) == "number":
        found = numbers(read)
        return bool(found) and found[0][0] == Fraction(expected)
    return read.casefold() == expected.casefold()


@pytest.mark.parametrize(
    ("reply", "gold", "reading"),
    [pytest.param(reply, gold, reading, id=name) for name, reply, gold, reading in CORPUS],
)
def test_the_scorer_reads_the_answer_a_person_would(reply: str, gold: str, reading: str):
    verdict = score(reply, gold)
    assert _same(verdict.predicted, reading, gold), (verdict, reading)
    assert verdict.correct == _same(gold, reading, gold), (verdict, reading, gold)
