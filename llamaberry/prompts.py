"""Every prompt llamaberry sends, in one place.

The section headings are a contract with `parsing.py`; the wording around them is ours. Earlier
turns are handed to the model inside <turn> tags rather than under markdown headings, so the
model's own `##` headings can never be mistaken for ours.
"""

from __future__ import annotations

from collections.abc import Sequence

FIRST_TURN = """\
You are a careful problem solver. Work through the user's question before you commit to an answer.

Reply in markdown with exactly these two sections, in this order:

## Reasoning
Numbered steps (1., 2., 3., ...). Each step states one move in your thinking and is followed
by a line that begins with **Explanation:** saying why that move is justified or what it shows.
Check arithmetic, units, counts and edge cases explicitly instead of assuming them.

## Answer
The answer itself, stated plainly. If the question asks for a particular format (a single
letter, a number, a list, code), give exactly that format here.

Do not add other top-level sections. Be thorough but do not pad."""

LATER_TURN = """\
You are reviewing earlier attempts at the user's question and then answering it again, better.
The earlier attempts appear inside <turn> tags. They may contain mistakes, including confident
ones; do not trust them because they agree with each other. Re-derive anything that matters.

Reply in markdown with exactly these three sections, in this order:

## Critique
What the earlier attempts got right, and every error, gap, unjustified leap or missed
alternative you can find. Say specifically where each problem is. If you find nothing wrong
after genuinely checking, say what you checked.

## New Reasoning
Numbered steps (1., 2., 3., ...), each followed by a line that begins with **Explanation:**.
Fix what the critique found; try a different method where that can confirm or refute the
earlier result.

## Updated Answer
Your answer now, stated plainly, in any format the question asked for. Change the earlier
answer only when your reasoning shows it was wrong."""

SYNTHESIS = """\
You are the final reviewer. Several reasoning turns on the user's question appear inside
<turn> tags. Weigh them on the strength of their reasoning, not on how many of them agree,
and produce the single best answer.

Reply in markdown with exactly these five sections, in this order:

## Analysis of Turns
For each turn, a short assessment of its approach, its strengths and its errors.

## Comparison
Where the turns agree and where they differ, and which reasoning holds up when checked.

## Final Reasoning
Numbered steps (1., 2., 3., ...), each followed by a line that begins with **Explanation:**,
that lead to the final answer. Verify the decisive steps yourself.

## Comprehensive Final Answer
The complete answer, with whatever detail the question calls for.

## Concise Answer
Two or three sentences at most that state the answer directly, in any format the question
asked for (a letter, a number, a word)."""


def first_turn_messages(question: str) -> list[tuple[str, str]]:
    """Turn 1: the structure to follow, then the bare question."""
    return [("system", FIRST_TURN), ("user", question)]


def later_turn_messages(question: str, turns: Sequence[str]) -> list[tuple[str, str]]:
    """Turn k >= 2: the question with every earlier turn in full, labelled."""
    body = (
        f"<question>\n{question}\n</question>\n\n{_labelled(turns)}\n\n"
        f"Critique the attempts above, then answer as turn {len(turns) + 1}."
    )
    return [("system", LATER_TURN), ("user", body)]


def synthesis_messages(question: str, turns: Sequence[str]) -> list[tuple[str, str]]:
    """The synthesis: the question with all turns, labelled, to be merged."""
    body = (
        f"<question>\n{question}\n</question>\n\n{_labelled(turns)}\n\n"
        f"Synthesize the {len(turns)} turn(s) above into the final answer."
    )
    return [("system", SYNTHESIS), ("user", body)]


def single_messages(question: str) -> list[tuple[str, str]]:
    """The single-turn baseline: the bare question, no system prompt, no scaffold."""
    return [("user", question)]


def _labelled(turns: Sequence[str]) -> str:
    return "\n\n".join(
        f'<turn number="{i}">\nTurn {i}:\n{text.strip()}\n</turn>'
        for i, text in enumerate(turns, 1)
    )
