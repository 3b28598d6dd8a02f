"""Datasets people already have: CSV, their own field names, lettered choices, a sample."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from llamaberry.cli import cli
from llamaberry.core.scoring import score
from llamaberry.eval import Fields, load_dataset, sample
from llamaberry.testing import FakeServer, RecordedRequest, Reply


def test_a_csv_with_its_own_field_names_is_read(tmp_path: Path):
    path = tmp_path / "export.csv"
    path.write_text(
        "id,prompt,target\n"
        '1,"What is 2 + 2?",4\n'
        '2,"A question\nover two lines?",yes\n'
        "3,,7\n"
        '4,"What is 3 + 3?",6\n'
    )
    dataset = load_dataset(path, fields=Fields(question="prompt", answer="target"))
    assert [(i.question, i.answer, i.scorer) for i in dataset.items] == [
        ("What is 2 + 2?", "4", "number"),
        ("A question\nover two lines?", "yes", "choice"),
        ("What is 3 + 3?", "6", "number"),
    ]
    # The empty question starts on line 5 of the file (the quoted field spans lines 3-4).
    assert dataset.skipped == ['export line 5 needs a "prompt" string.']


def test_choices_in_a_list_are_lettered_and_the_gold_becomes_a_letter(tmp_path: Path):
    path = tmp_path / "mc.jsonl"
    records = [
        {"q": "Which is heaviest?", "options": ["a feather", "a brick", "a leaf"], "gold": 1},
        {"q": "Which is a fruit?", "options": ["carrot", "apple"], "gold": "apple"},
        {"q": "Pick C.", "options": ["x", "y", "z"], "gold": "C"},
        {"q": "Broken.", "options": ["x", "y"], "gold": "w"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    dataset = load_dataset(path, fields=Fields(question="q", answer="gold", choices=["options"]))
    first = dataset.items[0]
    assert first.question == (
        "Which is heaviest?\n\nA. a feather\nB. a brick\nC. a leaf\n\n"
        "Answer with the letter of the right choice."
    )
    assert [(i.answer, i.scorer) for i in dataset.items] == [
        ("B", "choice"),
        ("B", "choice"),
        ("C", "choice"),
    ]
    assert dataset.skipped == ["mc line 4: the answer 'w' is not one of the choices."]
    assert score("The answer is B, a brick.", first.answer, first.scorer).correct
    assert not score("**A**", first.answer, first.scorer).correct


def test_choices_in_columns_of_a_csv(tmp_path: Path):
    path = tmp_path / "mmlu.csv"
    path.write_text("question,A,B,C,D,answer\nWhat is 2 + 3?,4,5,6,7,B\n")
    fields = Fields(choices=["A", "B", "C", "D"])
    [item] = load_dataset(path, fields=fields).items
    assert "A. 4\nB. 5\nC. 6\nD. 7" in item.question
    assert (item.answer, item.scorer) == ("B", "choice")


def test_a_sample_is_reproducible_and_keeps_dataset_order(tmp_path: Path):
    path = tmp_path / "many.jsonl"
    path.write_text(
        "".join(json.dumps({"question": f"q{i}", "answer": i}) + "\n" for i in range(50))
    )
    dataset = load_dataset(path)
    first, again, other = sample(dataset, 10, 1), sample(dataset, 10, 1), sample(dataset, 10, 2)
    ids = [i.index for i in first.items]
    assert ids == [i.index for i in again.items] == sorted(ids)
    assert ids != [i.index for i in other.items]
    assert len(ids) == 10
    assert sample(dataset, 500, 1).items == dataset.items


def test_the_command_asks_the_lettered_question_and_scores_the_letter(
    fake_server: FakeServer, tmp_path: Path
):
    path = tmp_path / "mc.csv"
    path.write_text(
        "prompt,c1,c2,c3,right\n"
        + "".join(f"Which is {i}?,{i},{i + 1},{i + 2},{i}\n" for i in range(20))
    )

    def pick(request: RecordedRequest) -> Reply:
        return Reply("Answer: A" if "Which is 1?" not in request.user else "Answer: C")

    fake_server.reply_with(pick)
    env = {"GROQ_API_KEY": "test-key", "GROQ_BASE_URL": fake_server.groq_base_url}
    args = ["eval", str(path), "--modes", "single", "--out", str(tmp_path / "out")]
    args += ["--question-field", "prompt", "--answer-field", "right"]
    args += ["--choices-field", "c1,c2,c3", "--sample", "5", "--seed", "3"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    asked = [r.user for r in fake_server.requests]
    assert len(asked) == 5
    assert all("\nA. " in q and "\nC. " in q for q in asked)
    rows = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert {row["gold"] for row in rows} == {"A"}
    assert all(row["correct"] == ("Which is 1?" not in row["question"]) for row in rows)
