"""The exports people have of the common benchmarks load as the benchmark means them, with no
flags (or one --preset), or fail with one line naming the flag that fixes them. Each test
writes a small file of its own, in the shape the benchmark's usual source gives it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llamaberry.cli import cli
from llamaberry.core.errors import InputError
from llamaberry.core.scoring import score
from llamaberry.eval import Fields, load_dataset


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _right(item, reply: str) -> bool:
    return score(reply, item.answer, item.scorer, item.aliases).correct


def test_math_with_problem_and_solution_takes_the_gold_from_the_last_box(tmp_path: Path):
    path = _jsonl(
        tmp_path / "math.jsonl",
        [
            {
                "problem": "What is $\\frac{6}{8}$ in lowest terms?",
                "solution": "Divide by $2$: $\\boxed{2}$ is the factor, so $\\boxed{\\frac{3}{4}}$.",
                "level": "Level 1",
            }
        ],
    )
    data = load_dataset(path)
    (item,) = data.items
    assert data.detected is not None and "--preset math" in data.detected
    assert item.question.startswith("What is")
    assert (item.answer, item.scorer) == ("\\frac{3}{4}", "math")
    assert _right(item, "So the answer is $\\boxed{0.75}$.")
    assert not _right(item, "So the answer is $\\boxed{\\frac{2}{3}}$.")
    # The same file named field by field: the gold is still the box, not the whole solution.
    flagged = load_dataset(path, fields=Fields(question="problem", answer="solution"))
    assert flagged.items[0].answer == "\\frac{3}{4}"


def test_math_500_uses_its_answer_field(tmp_path: Path):
    path = _jsonl(
        tmp_path / "math500.jsonl",
        [{"problem": "Solve $3x=6$.", "solution": "... $\\boxed{x=2}$", "answer": "2"}],
    )
    (item,) = load_dataset(path, preset="math").items
    assert (item.answer, item.scorer) == ("2", "number")
    assert _right(item, "Dividing by 3, $x = \\boxed{2}$.")


def test_an_mmlu_csv_with_choice_columns_runs_as_multiple_choice(tmp_path: Path):
    path = tmp_path / "mmlu.csv"
    path.write_text(
        "question,A,B,C,D,answer\n"
        "Which organelle makes ATP?,Nucleus,Mitochondria,Ribosome,Golgi,B\n",
        encoding="utf-8",
    )
    data = load_dataset(path)
    (item,) = data.items
    assert data.detected is not None and "A,B,C,D" in data.detected
    assert "\nB. Mitochondria\n" in item.question
    assert (item.answer, item.scorer) == ("B", "choice")


def test_an_hf_mmlu_export_with_a_choices_list_and_an_index(tmp_path: Path):
    path = _jsonl(
        tmp_path / "mmlu.jsonl",
        [{"question": "2 + 2?", "subject": "math", "choices": ["3", "4", "5", "6"], "answer": 1}],
    )
    (item,) = load_dataset(path).items
    assert "\nB. 4\n" in item.question and item.answer == "B"


def test_the_original_headerless_mmlu_csv(tmp_path: Path):
    path = tmp_path / "anatomy_test.csv"
    path.write_text(
        '"Which bone is in the arm?",Femur,Tibia,Humerus,Fibula,C\n'
        '"Which organ pumps blood?",Heart,Liver,Lung,Kidney,A\n',
        encoding="utf-8",
    )
    items = load_dataset(path, preset="mmlu").items
    assert [i.answer for i in items] == ["C", "A"]
    assert "\nC. Humerus\n" in items[0].question
    # Detected with no flag too: no header names a field, and each row ends in a letter.
    assert [i.answer for i in load_dataset(path).items] == ["C", "A"]


def test_arc_as_hf_exports_it_and_with_numeric_answer_keys(tmp_path: Path):
    path = _jsonl(
        tmp_path / "arc.jsonl",
        [
            {
                "id": "Mercury_1",
                "question": "Which is a gas at room temperature?",
                "choices": {"text": ["iron", "oxygen", "salt", "wood"], "label": list("ABCD")},
                "answerKey": "B",
            },
            {
                "id": "NYSEDREGENTS_2",
                "question": "Which planet is largest?",
                "choices": {"text": ["Mars", "Venus", "Jupiter", "Earth"], "label": list("1234")},
                "answerKey": "3",
            },
        ],
    )
    data = load_dataset(path)
    assert data.detected is not None and "--preset arc" in data.detected
    assert [i.answer for i in data.items] == ["B", "C"]  # "3" is the third choice, not D
    assert "\nC. Jupiter\n" in data.items[1].question


def test_arc_in_its_original_shape(tmp_path: Path):
    path = _jsonl(
        tmp_path / "ARC-Easy-Test.jsonl",
        [
            {
                "id": "x",
                "question": {
                    "stem": "What do plants take in?",
                    "choices": [{"text": "CO2", "label": "A"}, {"text": "gold", "label": "B"}],
                },
                "answerKey": "A",
            }
        ],
    )
    (item,) = load_dataset(path).items
    assert item.question.startswith("What do plants take in?\n\nA. CO2")
    assert item.answer == "A"


def test_a_tsv_file(tmp_path: Path):
    path = tmp_path / "set.tsv"
    path.write_text("question\tanswer\nWhat is 6 * 7?\t42\nCapital of Peru?\tLima\n")
    items = load_dataset(path).items
    assert [(i.answer, i.scorer) for i in items] == [("42", "number"), ("Lima", "contains")]


def test_a_json_array_file(tmp_path: Path):
    path = tmp_path / "set.json"
    path.write_text(json.dumps([{"question": "1 + 1?", "answer": 2}, {"question": "x"}]))
    data = load_dataset(path)
    assert [i.answer for i in data.items] == ["2"]
    assert data.skipped == ['set record 2 needs an "answer" string.']


def test_boolean_golds_boolq_and_strategyqa(tmp_path: Path):
    boolq = _jsonl(
        tmp_path / "boolq.jsonl",
        [{"question": "is the sky blue", "passage": "The sky looks blue by day.", "answer": True}],
    )
    data = load_dataset(boolq)
    (item,) = data.items
    assert data.detected is not None and "--preset boolq" in data.detected
    assert item.question.startswith("The sky looks blue by day.\n\nis the sky blue")
    assert (item.answer, item.scorer) == ("yes", "choice")
    assert _right(item, "No evidence suggests otherwise, so the statement is true.")
    strategy = _jsonl(
        tmp_path / "strategyqa.jsonl", [{"question": "Can fish fly?", "answer": False}]
    )
    (item,) = load_dataset(strategy).items
    assert item.answer == "no" and _right(item, "No, they cannot.")


def test_triviaqa_aliases_and_a_list_of_golds(tmp_path: Path):
    path = _jsonl(
        tmp_path / "triviaqa.jsonl",
        [
            {
                "question": "Who was the first US president?",
                "answer": {
                    "value": "George Washington",
                    "aliases": ["Washington", "G. Washington"],
                },
            },
            {"question": "Largest ocean?", "answer": ["Pacific Ocean", "Pacific"]},
        ],
    )
    data = load_dataset(path)
    assert data.detected is not None and "--preset triviaqa" in data.detected
    first, second = data.items
    assert first.aliases == ["Washington", "G. Washington"]
    assert _right(first, "It was Washington.")
    assert _right(second, "The Pacific.") and not _right(second, "The Atlantic, not the Pacific.")


@pytest.mark.parametrize("gold", ["NaN", "1e999", "-Infinity"])
def test_a_nan_or_infinite_gold_is_a_bad_line(tmp_path: Path, gold: str):
    path = tmp_path / "bad.jsonl"
    path.write_text(f'{{"question": "q?", "answer": {gold}}}\n{{"question": "r?", "answer": 3}}\n')
    data = load_dataset(path)
    assert [i.answer for i in data.items] == ["3"]
    assert len(data.skipped) == 1 and "is not a usable answer" in data.skipped[0]


def test_a_letter_gold_without_its_choices_is_never_run_as_free_text(tmp_path: Path):
    path = _jsonl(
        tmp_path / "mc.jsonl",
        [{"question": "Which is a mammal?", "options": ["shark", "whale"], "answer": "B"}],
    )
    with pytest.raises(InputError, match="--choices-field"):
        load_dataset(path)
    fixed = load_dataset(path, fields=Fields(choices=["options"]))
    assert "\nB. whale\n" in fixed.items[0].question


def test_unknown_field_names_say_which_flags_fix_them(tmp_path: Path):
    path = _jsonl(tmp_path / "odd.jsonl", [{"prompt": "q?", "target": "4"}])
    with pytest.raises(InputError) as caught:
        load_dataset(path)
    message = str(caught.value)
    assert "\n" not in message
    assert "prompt, target" in message and "--question-field" in message
    assert "--preset" in message


def test_the_cli_says_what_it_detected_and_takes_a_preset(tmp_path: Path, fake_server):
    path = _jsonl(
        tmp_path / "gsm.jsonl", [{"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}]
    )
    fake_server.reply_with(lambda request: "2 + 3 is 5.")
    env = {"GROQ_API_KEY": "test-key", "GROQ_BASE_URL": fake_server.groq_base_url}
    env["LLAMABERRY_HISTORY"] = "0"
    args = ["eval", "--modes", "single", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, [*args, str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert "gsm: detected GSM8K" in result.stderr
    result = CliRunner().invoke(cli, [*args, "--preset", "gsm8k", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert "detected" not in result.stderr
    assert "| single | 100.0%" in result.stdout
