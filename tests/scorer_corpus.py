"""Replies of the kinds real models send, each with the answer a careful reader takes from it.

Every case is (name, reply, gold, reading): `reading` is what the scorer must read as the answer
(a number's value, a choice letter, yes/no), whether or not it matches the gold. Several cases
are right only when the scorer avoids a trap: a bold label, a numbered step, a number inside the
working, an earlier answer the model later corrected.
"""

from __future__ import annotations

TURN_ONE = """## Reasoning
1. Spell the word: s-t-r-a-w-b-e-r-r-y.
**Explanation:** Writing it out avoids counting from memory.
2. Mark each r: positions 3, 8 and 9.
**Explanation:** Three positions hold the letter r.

## Answer
3"""

TURN_TWO = """## Critique
Turn 1 counted 2 r's and missed the r at position 3.

## New Reasoning
1. Recount: s(1) t(2) r(3) a(4) w(5) b(6) e(7) r(8) r(9) y(10).
**Explanation:** Each letter is given its position.

## Updated Answer
There are **3** r's in "strawberry" (turn 2)."""

SYNTHESIS = """## Analysis of Turns
Turn 1 said 2; turn 2 recounted and found 3.

## Comparison
Turn 2's letter-by-letter count holds up; turn 1 skipped position 3.

## Final Reasoning
1. The letters at positions 3, 8 and 9 are r.
**Explanation:** Checked one by one.

## Comprehensive Final Answer
The word "strawberry" has the letter r at positions 3, 8 and 9, so it appears 3 times.

## Concise Answer
The letter r appears 3 times in "strawberry"."""

STEPS_STYLE = """**Step 1:** Natalia sold 48 clips in April.

**Step 2:** In May she sold half as many: 48 / 2 = 24.

**Step 3:** Altogether: 48 + 24 = 72.

**Explanation:** We add April and May."""

CORPUS: list[tuple[str, str, str, str]] = [
    # -- markdown answer sections ---------------------------------------------------------------
    ("single reply ending in an answer section", TURN_ONE, "3", "3"),
    ("answer section after numbered steps is wrong", TURN_ONE, "4", "3"),
    ("updated answer section with bold and an aside", TURN_TWO, "3", "3"),
    ("synthesis: the concise answer is the last section", SYNTHESIS, "3", "3"),
    (
        "answer section followed by a trailing explanation",
        "## Answer\n72\n\nThis is 48 clips in April plus 24 in May.",
        "72",
        "72",
    ),
    (
        "final answer heading at level three",
        "### Working\n12 * 5 = 60 eggs.\n\n### Final Answer\n60 eggs",
        "60",
        "60",
    ),
    (
        "bold heading line",
        "We compare the tenths: 9 > 1.\n\n**Final Answer:**\n9.9 is larger than 9.11.",
        "9.9",
        "9.9",
    ),
    (
        "bold heading with the answer on the same line",
        "The bat costs $1.05 and the ball $0.05.\n\n**Final Answer:** $0.05",
        "0.05",
        "0.05",
    ),
    (
        "an answer heading with a colon",
        "Let me count each s.\nAnswer: 4\nThe s's are at 3, 4, 6 and 7.",
        "4",
        "4",
    ),
    (
        "answer section that restates an equation",
        "## Reasoning\n1. Half of 48 is 24.\n**Explanation:** May is half of April.\n\n"
        "## Answer\n48 + 24 = 72 clips",
        "72",
        "72",
    ),
    # -- "answer is" sentences ------------------------------------------------------------------
    (
        "answer-is sentence at the end of prose",
        "We add 3 and 4, then double 7 to get 14. So the answer is 42.",
        "42",
        "42",
    ),
    (
        "answer-is sentence followed by an explanation",
        "The answer is 5 dollars. Explanation: 20 - 3 * 5 = 5, which is what is left.",
        "5",
        "5",
    ),
    (
        "the later of two answer-is sentences wins",
        "At first glance the answer is 2.\nRechecking the spelling, the answer is 3.",
        "3",
        "3",
    ),
    (
        "answer-is sentence holding an equation",
        "Combining both months, the final answer is 48 + 24 = 72.",
        "72",
        "72",
    ),
    (
        "GSM8K-style #### line",
        "She sells 16 - 3 - 4 = 9 eggs a day.\nShe makes 9 * 2 = 18 dollars.\n#### 18",
        "18",
        "18",
    ),
    # -- LaTeX ----------------------------------------------------------------------------------
    (
        "boxed integer",
        "Adding both months: $48 + 24 = 72$.\n\nTherefore the total is $\\boxed{72}$.",
        "72",
        "72",
    ),
    (
        "boxed fraction",
        "The probability is the ratio of favourable cases:\n\\[\\boxed{\\frac{1}{2}}\\]",
        "0.5",
        "1/2",
    ),
    (
        "boxed with text units",
        "So the ball costs \\(\\boxed{\\$0.05}\\), and the bat costs \\$1.05.",
        "0.05",
        "0.05",
    ),
    (
        "boxed with a LaTeX thousands separator",
        "The total is $\\boxed{1{,}250}$ apples.",
        "1250",
        "1250",
    ),
    # -- bold labels and bold answers -----------------------------------------------------------
    ("steps with bold step labels and an explanation label", STEPS_STYLE, "72", "72"),
    (
        "bold answer after a bold label",
        "**Explanation:** Count the r's one by one.\n\nThere are **3** r's.",
        "3",
        "3",
    ),
    (
        "bold answer inside reasoning with a trailing note label",
        "Half of 48 is 24, so together **72** clips.\n\n**Note:** May had fewer sales.",
        "72",
        "72",
    ),
    (
        "a bold emphasis word is not an answer",
        "We must **not** count the w. The r's sit at 3, 8 and 9, so there are 3 of them.",
        "3",
        "3",
    ),
    # -- end of the reply -----------------------------------------------------------------------
    (
        "plain sentence with the answer first",
        "There are 3 r's in strawberry (at positions 3, 8 and 9).",
        "3",
        "3",
    ),
    (
        "plain sentence with the answer after a result word",
        "Adding 48 and 24 gives 72.",
        "72",
        "72",
    ),
    (
        "comparison sentence names the larger number first",
        "Comparing digit by digit, 9.9 is larger than 9.11.",
        "9.9",
        "9.9",
    ),
    (
        "the last line is read, not the first number of the reply",
        "1. Write out the word.\n2. Count the s's.\nThere are 4 s's in mississippi.",
        "4",
        "4",
    ),
    (
        "a friendly sign-off after the answer",
        "Counting letter by letter, there are 3 r's.\n\nLet me know if you have more questions!",
        "3",
        "3",
    ),
    (
        "number words",
        "Spelled out, the letter e shows up four times in excellence.",
        "4",
        "4",
    ),
    (
        "a wrong reply is read as what it says",
        "1. Count: s, t, r, a, w, b, e, r, r, y.\nThere are 2 r's.",
        "3",
        "2",
    ),
    # -- choices --------------------------------------------------------------------------------
    (
        "choice in an answer section",
        "## Reasoning\n1. A is too light.\n**Explanation:** 2 kg < 5 kg.\n\n## Answer\n(C)",
        "C",
        "C",
    ),
    (
        "choice letter opening an answer-is sentence",
        "Options A and B both fail the test. The answer is C because only it balances.",
        "C",
        "C",
    ),
    (
        "choice letter in a bold final answer",
        "A is too small and D is too large.\n\n**Final Answer: B**",
        "B",
        "B",
    ),
    (
        "the letter named last after a correction",
        "Option (A) looks right at first.\nOn reflection the answer is (D).",
        "D",
        "D",
    ),
    (
        "yes in an answer section after a no in the reasoning",
        "## Reasoning\n1. Is there a bloop that is not a razzie? No.\n"
        "**Explanation:** Every bloop is a razzie.\n\n## Answer\nYes, every bloop is a lazzie.",
        "yes",
        "yes",
    ),
    (
        "no at the end of a reply",
        "Some bloops might not be lazzies, so we cannot conclude it.\n\nNo.",
        "no",
        "no",
    ),
    (
        "a choice given first and explained after",
        "B. It is the only option that keeps the total under 10.\nA gives 12, which is too many.",
        "B",
        "B",
    ),
]
