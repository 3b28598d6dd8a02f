"""Tolerant parsing of the section contracts: well-formed, messy and unstructured replies."""

from __future__ import annotations

import pytest

from llamaberry.modes import prompts
from llamaberry.modes.parsing import (
    TURN_SECTIONS,
    normalise,
    parse_steps,
    parse_synthesis,
    parse_turn,
    read_echo,
    split_sections,
)

from .conftest import FIRST_TURN, LATER_TURN, SYNTHESIS


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


# -- our prompt written back, spliced --------------------------------------------------------
# What refine hands read_echo for its synthesis: what it wrote itself in the request (the
# messages less the question and the turns), and the question and turns as what may be copied.
QUESTION = 'How many times does the letter "r" appear in the word "strawberry"?'
TURNS = [FIRST_TURN, LATER_TURN.format(previous=1, index=2), LATER_TURN.format(previous=2, index=3)]
OURS = [
    text
    for role, text in prompts.synthesis_messages(QUESTION, TURNS)
    if role != "assistant" and text != QUESTION
]


def sentence_of(prompt: str, starts: str) -> str:
    """The sentence of one of our prompts that begins with `starts`, on one line."""
    flat = " ".join(prompt.split())
    begin = flat.index(starts)
    end = flat.find(". ", begin)
    return flat[begin : end + 1] if end != -1 else flat[begin:]


def first_half(sentence: str) -> str:
    words = sentence.split()
    return " ".join(words[: len(words) // 2])


def second_half(sentence: str) -> str:
    words = sentence.split()
    return " ".join(words[len(words) // 2 :])


CHANGE = sentence_of(prompts.LATER_TURN, "Change the earlier answer")
AGREEMENT = sentence_of(prompts.LATER_TURN, "They may hold mistakes")
CONCISE = sentence_of(prompts.SYNTHESIS, "Two or three sentences")
COMPLETE = sentence_of(prompts.SYNTHESIS, "The complete answer")
WEIGH = sentence_of(prompts.SYNTHESIS.format(count=3), "Final review")
COMPARE = sentence_of(prompts.SYNTHESIS, "Where the turns agree")
SYSTEM_ANSWER = sentence_of(prompts.REFINE_SYSTEM, "The answer itself")

SPLICED = {
    # The first half of one sentence of ours, the second half of another.
    "halves of two sentences": f"{first_half(CHANGE)} {second_half(AGREEMENT)}",
    "halves across two prompts": f"{first_half(CONCISE)} {second_half(SYSTEM_ANSWER)}",
    "halves the other way round": f"{first_half(WEIGH)} {second_half(CONCISE)}",
    # What the embedded SmolLM2 wrote as its synthesis (issue 29's sanity eval).
    "the 135M model's synthesis": "Change the earlier answer only if your reasoning proves nothing.",
    "the 135M model's other one": "Change the earlier answer only if you have a single answer.",
    "a word swapped": "The final answer, with the detail the question calls for.",
    # Two words changed in one sentence of ours.
    "two words changed": COMPARE.replace("differ", "disagree").replace("holds", "stands"),
    "two words dropped": CONCISE.replace("directly ", "").replace("at most, ", "at most "),
    # A run of fragments of our instructions, cut and joined.
    "a run of fragments": " ".join(
        [
            first_half(CHANGE) + ".",
            second_half(COMPLETE),
            first_half(COMPARE) + ",",
            "Numbered steps, each followed by a line.",
            second_half(WEIGH),
        ]
    ),
    "fragments on lines of their own": "\n".join(
        [first_half(CONCISE), second_half(CHANGE), first_half(SYSTEM_ANSWER), second_half(COMPARE)]
    ),
}


@pytest.mark.parametrize("name", SPLICED)
def test_a_spliced_echo_of_our_prompt_is_an_echo_with_nothing_of_its_own(name: str):
    spliced = SPLICED[name]
    # Not a whole sentence of ours: the sentence-by-sentence reading alone let it through.
    assert not any(" ".join(sentence.split()) == spliced for sentence in (CHANGE, CONCISE))
    echo = read_echo(spliced, OURS, [QUESTION, *TURNS])
    assert echo.echoed, spliced
    assert not echo.own, (spliced, echo.text)


def test_a_spliced_echo_with_an_answer_of_its_own_keeps_the_answer():
    echo = read_echo(f"{CONCISE} The letter r appears 3 times.", OURS, [QUESTION, *TURNS])
    assert echo.echoed and echo.own
    assert echo.text == "The letter r appears 3 times."
    spliced = f"{first_half(CONCISE)} {second_half(SYSTEM_ANSWER)}: 42"
    echo = read_echo(spliced, OURS, [QUESTION, *TURNS])
    assert (echo.echoed, echo.own, echo.text) == (True, True, "42")


def test_a_spliced_echo_that_copies_a_turn_has_nothing_of_its_own():
    echo = read_echo(f"{first_half(CHANGE)} {second_half(AGREEMENT)}\n3 (turn 2)", OURS, TURNS)
    assert echo.echoed and not echo.own


STAY = {
    "quotes a few words of an instruction": "The answer, stated plainly, is 42.",
    "quotes the question": 'The letter "r" appears in the word "strawberry" three times.',
    "quotes an instruction in a longer answer": (
        "The answer itself, stated plainly: there are 3 r's in strawberry, at positions 3, 8 "
        "and 9, and a letter-by-letter recount confirms it."
    ),
    "a long answer with one spliced sentence of ours": (
        "Spelling the word out gives s-t-r-a-w-b-e-r-r-y. The r's sit at positions 3, 8 and 9, "
        "so the letter appears three times; the double r near the end is where most counts go "
        "wrong, since it is easy to read it as one letter. "
        f"{first_half(CHANGE)} {second_half(AGREEMENT)} "
        "Counting again from the end of the word gives the same three, so the answer is 3."
    ),
    "a first turn in its sections": FIRST_TURN,
    # (A line that begins "Turn 1 ..." loses those words as a label of ours: not this test's.)
    "a later turn in its sections": LATER_TURN.format(previous=1, index=2).replace(
        "Turn 1 counted", "The first turn counted"
    ),
    "a later turn that begins by naming the turn before": LATER_TURN.format(previous=1, index=2),
    "an answer that begins by naming the drafts": (
        "Draft 1 and draft 2 count 3 r's, and draft 3 agrees once it recounts the double r."
    ),
    "a synthesis in its sections": SYNTHESIS,
    "a terse synthesis in its sections": (
        "## Analysis of Turns\nAll three said 3.\n\n## Comparison\nThey agree.\n\n"
        "## Final Reasoning\n1. Count: 3.\n**Explanation:** Checked.\n\n"
        "## Comprehensive Final Answer\n3\n\n## Concise Answer\n3"
    ),
}


@pytest.mark.parametrize("name", STAY)
def test_an_answer_that_borrows_a_few_of_our_words_stays_an_answer(name: str):
    text = STAY[name]
    echo = read_echo(text, OURS, [QUESTION])
    assert (echo.echoed, echo.own, echo.text) == (False, True, text.strip())


def test_a_long_answer_with_a_whole_sentence_of_ours_keeps_the_rest():
    answer = (
        "Spelling the word out gives s-t-r-a-w-b-e-r-r-y. The r's sit at positions 3, 8 and 9, "
        "so the letter appears three times."
    )
    echo = read_echo(f"{answer} {COMPARE}", OURS, [QUESTION])
    assert (echo.echoed, echo.own, echo.text) == (True, True, answer)


@pytest.mark.parametrize("answer", ["42", "B", "Yes.", "3 (turn 2)", "9.9", "Answer: 47"])
def test_a_short_answer_is_never_an_echo(answer: str):
    echo = read_echo(answer, OURS, [QUESTION])
    assert (echo.echoed, echo.own, echo.text) == (False, True, answer)
