"""Tolerant parsing of the section contracts: well-formed, messy and unstructured replies."""

from __future__ import annotations

from llamaberry.modes.parsing import (
    TURN_SECTIONS,
    normalise,
    parse_steps,
    parse_synthesis,
    parse_turn,
    split_sections,
)


def test_well_formed_first_turn_parses_steps_and_answer():
    turn = parse_turn(
        1,
        "## Reasoning\n1. Add 2 and 2.\n**Explanation:** Basic sum.\n"
        "2. Check it.\n**Explanation:** 4 - 2 = 2.\n\n## Answer\n4",
    )
    assert turn.structured
    assert turn.answer == "4"
    assert [(s.number, s.text, s.explanation) for s in turn.reasoning] == [
        (1, "Add 2 and 2.", "Basic sum."),
        (2, "Check it.", "4 - 2 = 2."),
    ]


def test_headings_at_other_levels_numbered_bold_or_with_colons_still_parse():
    text = (
        "# 1. Critique:\nFine.\n\n"
        "**New Reasoning:**\n1) Redo it\nExplanation: same\n\n"
        "### UPDATED ANSWER ###\n42"
    )
    turn = parse_turn(2, text)
    assert turn.critique == "Fine."
    assert turn.answer == "42"
    assert turn.reasoning[0].text == "Redo it"
    assert turn.reasoning[0].explanation == "same"


def test_answer_on_the_heading_line_is_kept():
    assert parse_turn(1, "## Reasoning\n1. x\n## Answer: 17").answer == "17"


def test_the_models_own_headings_stay_inside_the_section():
    turn = parse_turn(1, "## Reasoning\n1. Think.\n\n## Answer\nYes.\n\n## Note\nA caveat.")
    assert turn.answer == "Yes.\n\n## Note\nA caveat."


def test_headings_inside_code_blocks_are_not_sections():
    text = "## Answer\n```markdown\n## Reasoning\nnot a section\n```\nDone."
    sections = split_sections(text, TURN_SECTIONS)
    assert set(sections) == {"answer"}
    assert "not a section" in sections["answer"]


def test_a_reply_wrapped_in_a_code_fence_is_unwrapped():
    turn = parse_turn(1, "```markdown\n## Reasoning\n1. a\n## Answer\nB\n```")
    assert turn.answer == "B"


def test_a_reply_that_ignores_the_structure_keeps_its_raw_text_as_answer():
    raw = "I think the answer is 7 because 3 + 4 = 7."
    turn = parse_turn(1, raw)
    assert not turn.structured
    assert turn.content == raw
    assert turn.answer == raw
    assert turn.reasoning == []


def test_a_later_turn_that_uses_turn_one_headings_still_finds_its_answer():
    turn = parse_turn(3, "## Reasoning\n1. a\n## Answer\nC")
    assert turn.answer == "C"


def test_bold_words_starting_a_sentence_are_not_headings():
    sections = split_sections("## Answer\n**Answer** is not simple here.", TURN_SECTIONS)
    assert sections["answer"] == "**Answer** is not simple here."


def test_synthesis_answer_falls_back_concise_then_comprehensive_then_whole_reply():
    full = parse_synthesis("## Comprehensive Final Answer\nLong.\n## Concise Answer\nShort.")
    assert full.answer == "Short."
    no_concise = parse_synthesis("## Analysis of Turns\nok\n## Comprehensive Final Answer\nLong.")
    assert no_concise.answer == "Long."
    raw = parse_synthesis("Just the answer: 12.")
    assert raw.answer == "Just the answer: 12." and not raw.structured


def test_synthesis_sections_are_all_parsed():
    synthesis = parse_synthesis(
        "## Analysis of Turns\nA\n## Comparison\nB\n## Final Reasoning\n1. s\n**Explanation:** e\n"
        "## Comprehensive Final Answer\nC\n## Concise Answer\nD"
    )
    assert (synthesis.analysis, synthesis.comparison, synthesis.comprehensive_answer) == (
        "A",
        "B",
        "C",
    )
    assert synthesis.reasoning[0].explanation == "e"


def test_step_markers_in_several_styles():
    steps = parse_steps(
        "**Step 1:** Read.\n- **Explanation:** why one\n"
        "### Step 2. Write.\n*Explanation:* why two\n"
        "3. Check.\ncontinued line\nExplanation: why three"
    )
    assert [(s.number, s.text, s.explanation) for s in steps] == [
        (1, "Read.", "why one"),
        (2, "Write.", "why two"),
        (3, "Check.\ncontinued line", "why three"),
    ]


def test_normalise_reduces_headings_to_words():
    assert normalise("**2. New  Reasoning:**") == "new reasoning"
    assert normalise("Concise Answer (2-3 sentences)") == "concise answer"


def test_random_messy_replies_never_raise_and_never_lose_the_reply():
    import random

    rng = random.Random(1234)
    fragments = [
        "## Reasoning",
        "# Answer:",
        "**Updated Answer**",
        "### 2. New Reasoning",
        "## Critique",
        "## Concise Answer",
        "## Comprehensive Final Answer",
        "```",
        "```markdown",
        "~~~",
        "1. a step",
        "2) another",
        "**Explanation:** why",
        "Explanation:",
        "- bullet",
        "",
        "plain words",
        "## Note",
        "**Step 3:**",
        "|table|row|",
        "<script>x</script>",
        "  ",
        "🍓",
    ]
    for _ in range(500):
        text = "\n".join(rng.choice(fragments) for _ in range(rng.randint(0, 25)))
        for index in (1, 2):
            turn = parse_turn(index, text)
            assert turn.content == text
            if text.strip():
                assert turn.answer.strip()
        synthesis = parse_synthesis(text)
        assert synthesis.content == text
        if text.strip():
            assert synthesis.answer.strip()
