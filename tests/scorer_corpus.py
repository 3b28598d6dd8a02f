"""Replies of the kinds real models send, each with the answer a careful reader takes from it.

Every case is (name, reply, gold, reading): `reading` is what the scorer must read as the answer
(a number's value, a choice letter, yes/no), whether or not it matches the gold; for text and
maths golds, `reading` is the gold when a careful grader marks the reply right and anything
else when wrong; an empty `reading` means the reply holds no answer at all (unreadable). A gold may be a list: the first is the gold, the rest its aliases.

`CLASSES` groups the cases by the kind of misreading they guard against, each with right and
wrong answers (a scorer that says "right" too easily fails the wrong ones). Several cases
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

PLACEMENT: list[tuple[str, str, str | list[str], str]] = [
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

SIGNS_AND_FORMS: list[tuple[str, str, str | list[str], str]] = [
    ("a minus before a currency sign", "She ends the month at -$5.", "-5", "-5"),
    ("a minus before a currency sign, gold positive", "The balance is -$5 now.", "5", "-5"),
    ("a Unicode minus", "Overnight it falls to \u22127 \u00b0C.", "-7", "-7"),
    ("a Unicode minus, reply positive", "Overnight it rises to 7 \u00b0C.", "-7", "7"),
    (
        "a power of ten with a times sign",
        "Light covers about 3 \u00d7 10^8 metres each second.",
        "300000000",
        "300000000",
    ),
    ("e-notation", "The error is 1.5e-3 in the end.", "0.0015", "0.0015"),
    ("e-notation, wrong exponent", "The error is 1.5e-2 in the end.", "0.0015", "0.015"),
    ("a LaTeX thin space in thousands", "In all, $1,\\!000$ tickets.", "1000", "1000"),
    ("a mixed number in LaTeX", "Each gets $3\\frac{1}{2}$ cups.", "3.5", "3.5"),
    ("a mixed number in LaTeX, wrong", "Each gets $2\\frac{1}{2}$ cups.", "3.5", "2.5"),
    ("a fraction without braces", "The chance is $\\frac34$.", "0.75", "0.75"),
    (
        "a power of ten in LaTeX against e-notation",
        "About $6.02 \\times 10^{23}$ atoms.",
        "6.02e23",
        "6.02e23",
    ),
]

WHICH_NUMBER: list[tuple[str, str, str | list[str], str]] = [
    ("a product stated with is", "19 * 21 is 399.", "399", "399"),
    ("a sum stated with is, wrong", "5 + 5 is 11.", "10", "11"),
    ("a number ruled out, then the answer", "It is not 8, but 9.", "9", "9"),
    ("a number ruled out, then a wrong answer", "It is not 9, but 8.", "9", "8"),
    ("parts then the total", "Answer: 4 cats and 6 dogs, 10 pets in total.", "10", "10"),
    ("a total of", "Counting both shelves, there is a total of 31 books.", "31", "31"),
    (
        "a bold figure in the working, the result in the closing sentence",
        "Per day: **12** pages.\nOver a week: 12 \u00d7 7 = 84 pages.\n\nSo she reads 84 pages.",
        "84",
        "84",
    ),
    (
        "a closing courtesy holding a number",
        "6 boxes of 8 make 48 eggs.\n\nI hope this helps with your 3 other questions!",
        "48",
        "48",
    ),
    (
        "a closing courtesy after a wrong answer",
        "6 boxes of 8 make 46 eggs. Let me know if you want the 2 other ways to count!",
        "48",
        "46",
    ),
    (
        "a reply that is only a courtesy holds no answer",
        "Good question! I hope this helps with your 3 exams!",
        "3",
        "",
    ),
    ("subtraction is not a sign", "3 - 10 = -7, so it is -7 degrees.", "-7", "-7"),
]

MATHS: list[tuple[str, str, str | list[str], str]] = [
    ("a decimal against a LaTeX fraction", "So $\\boxed{0.75}$.", "\\frac{3}{4}", "\\frac{3}{4}"),
    ("a spaced root", "Hence $\\boxed{2 \\sqrt{3}}$.", "2\\sqrt{3}", "2\\sqrt{3}"),
    ("a value against an equation", "We get $\\boxed{2}$.", "x=2", "x=2"),
    ("a spaced pair", "The point is $\\boxed{(2, 3)}$.", "(2,3)", "(2,3)"),
    ("a wrong fraction", "So $\\boxed{\\frac{2}{3}}$.", "\\frac{3}{4}", "wrong"),
    ("a wrong root", "Hence $\\boxed{3\\sqrt{2}}$.", "2\\sqrt{3}", "wrong"),
    ("a wrong pair", "The point is $\\boxed{(3, 2)}$.", "(2,3)", "wrong"),
    ("an expression in factored form", "$\\boxed{(x+1)^2}$", "x^2+2x+1", "x^2+2x+1"),
    ("a power tower is not sent to sympy", "$\\boxed{2^{2^{40}}}$", "2^{10}", "wrong"),
]

CHOICES: list[tuple[str, str, str | list[str], str]] = [
    (
        "the correct option is, then an explanation",
        "The correct option is C. Ribosomes build proteins.",
        "C",
        "C",
    ),
    (
        "options ruled out one by one, then so",
        "Option A is wrong. Option C is wrong. Option D is incorrect. So B.",
        "B",
        "B",
    ),
    (
        "options ruled out, then so, wrong",
        "Option A is wrong. Option B is wrong. Option D is incorrect. So C.",
        "B",
        "C",
    ),
    (
        "tempting options, then the answer must be",
        "(B) is tempting, but (C) ignores drag, so the answer must be A.",
        "A",
        "A",
    ),
    (
        "between two, then one is correct",
        "I'm between A and C. After checking, C is correct.",
        "C",
        "C",
    ),
    (
        "between two, then the wrong one is correct",
        "I'm between A and C. After checking, A is correct.",
        "C",
        "A",
    ),
]

YES_NO_AND_TEXT: list[tuple[str, str, str | list[str], str]] = [
    (
        "no as a determiner before a true",
        "No data contradicts it, so the claim is true.",
        "yes",
        "yes",
    ),
    ("not true", "Having checked the dates, that is not true.", "no", "no"),
    ("a name ruled out before the answer", "It's not Rome, it's Milan.", "Rome", "wrong"),
    ("the answer before a name ruled out", "It's Milan, not Rome.", "Milan", "Milan"),
    ("a surname for the full name", "**Lincoln**", "Abraham Lincoln", "Abraham Lincoln"),
    (
        "a surname in a sentence",
        "The 16th president was **Lincoln**.",
        "Abraham Lincoln",
        "Abraham Lincoln",
    ),
    ("a first name only is not enough", "**Abraham**", "Abraham Lincoln", "wrong"),
    (
        "an alias",
        "That would be the Big Apple.",
        ["New York City", "Big Apple", "NYC"],
        "New York City",
    ),
    ("no alias matches", "That would be Chicago.", ["New York City", "Big Apple"], "wrong"),
]

CLASSES: dict[str, list[tuple[str, str, str | list[str], str]]] = {
    "where the answer sits": PLACEMENT,
    "signs and number forms": SIGNS_AND_FORMS,
    "which number is the answer": WHICH_NUMBER,
    "maths compared by meaning": MATHS,
    "choices": CHOICES,
    "yes/no and short text": YES_NO_AND_TEXT,
}
CORPUS = [case for cases in CLASSES.values() for case in cases]
