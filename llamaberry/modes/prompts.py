"""Every prompt llamaberry sends, in one place.

The section headings are a contract with `parsing.py`; the wording around them is ours.

Every mode that makes several calls lays them out for the servers' prompt caches: one system
prompt per run, covering every part the run's calls play; the question in the same place and
the same words each time; each call's own instruction last. A call's request then begins with
what an earlier one sent (refine's with the whole of the previous call and its reply), and a
server that caches prompt prefixes reads that part back instead of evaluating it again.
Drafts are handed to the editor inside <draft> tags rather than under markdown headings, so
a draft's own `##` headings can never be mistaken for ours.
"""

from __future__ import annotations

from collections.abc import Sequence

# A refine run is one conversation. Turn 1 is asked exactly as a single structured answer: its
# instruction (the two sections) as the system prompt and the bare question as the user message.
# Each later call adds the previous reply and its own instruction (the sections to write) to
# that conversation. So each call's request begins, byte for byte, with the previous call's
# request and its reply, and a server's prompt cache (Groq's, OpenAI's, vLLM's, llama.cpp's
# slot) reads all of that back instead of evaluating it again; only the newest reply and
# instruction are new.
REFINE_SYSTEM = """\
You are a careful problem solver. Work through the user's question before you commit to an answer.

Reply in markdown with exactly these two sections, in this order:

## Reasoning
Numbered steps (1., 2., 3., ...). Each step states one move in your thinking and is followed
by a line that begins with **Explanation:** saying why that move is justified or what it shows.
Check arithmetic, units, counts and edge cases explicitly instead of assuming them.

## Answer
The answer itself, stated plainly. If the question asks for a particular format (a single
letter, a number, a list, code), give exactly that format here.

Do not add other top-level sections. Be thorough but do not pad.

Later requests may ask you to review your answers and answer again, or to weigh them all in a
final synthesis; each names its own sections, which then replace the two above."""

# The short system prompt of the compact condensed forms, used only when even the condensed
# turns under REFINE_SYSTEM do not fit the model's context window.
COMPACT_SYSTEM = """\
You are a careful problem solver. You answer the user's question in turns: a first answer,
later turns that review the earlier ones and answer again, then a final synthesis of them all.
Each request says which turn it is and the sections to reply in."""

LATER_TURN = """\
Turn {number}: review your turns 1 to {previous} above, then answer again, better. They may
hold mistakes, confident ones too, and agreement between them proves nothing: re-derive what
matters.

Reply in markdown with exactly these three sections, in this order:

## Critique
What the earlier turns got right, and every error, gap, unjustified leap or missed alternative,
each pinned to where it is. If real checking finds nothing wrong, say what you checked.

## New Reasoning
Numbered steps (1., 2., 3., ...), each followed by a line that begins with **Explanation:**.
Fix what the critique found; where a different method can confirm or refute the earlier
result, use it.

## Updated Answer
Your answer now, stated plainly, in any format the question asked for. Change the earlier
answer only if your reasoning shows it wrong."""

# Turn 3 onwards in the full conversation: turn 2's instruction, with the whole format, is in
# the conversation already, so each later one names its sections and points back to it.
LATER_TURN_AGAIN = """\
Turn {number}: as in turn 2, review your turns 1 to {previous} above (they may hold confident
mistakes, and agreement proves nothing: re-derive what matters), then answer again, better, in
exactly turn 2's three sections, in order: ## Critique, ## New Reasoning, ## Updated Answer."""

SYNTHESIS = """\
Final review: weigh your {count} reasoning turn(s) above by the strength of their reasoning,
not by how many agree, and give the single best answer.

Reply in markdown with exactly these five sections, in this order:

## Analysis of Turns
Each turn's approach, strengths and errors, briefly.

## Comparison
Where the turns agree and differ, and which reasoning holds up when checked.

## Final Reasoning
Numbered steps (1., 2., 3., ...), each followed by a line that begins with **Explanation:**,
leading to the final answer. Verify the decisive steps yourself.

## Comprehensive Final Answer
The complete answer, with the detail the question calls for.

## Concise Answer
Two or three sentences at most, stating the answer directly in any format the question asked
for (a letter, a number, a word)."""


def first_turn_messages(question: str) -> list[tuple[str, str]]:
    """Turn 1: its two sections as the run's system prompt, then the bare question."""
    return [("system", REFINE_SYSTEM), ("user", question)]


def later_turn_messages(question: str, turns: Sequence[str]) -> list[tuple[str, str]]:
    """Turn k >= 2: the conversation so far (every earlier turn in full, as the replies they
    were), then turn k's instruction."""
    return _after_turns(question, turns, _later(len(turns) + 1))


def synthesis_messages(question: str, turns: Sequence[str]) -> list[tuple[str, str]]:
    """The synthesis: the conversation with every turn, then the instruction to weigh them."""
    return _after_turns(question, turns, SYNTHESIS.format(count=len(turns)))


def _after_turns(question: str, turns: Sequence[str], instruction: str) -> list[tuple[str, str]]:
    # Turn k's instruction is sent again exactly as turn k was given it, so the conversation
    # up to any turn is the very request that turn answered, followed by its reply.
    messages = first_turn_messages(question)
    for number, text in enumerate(turns, 1):
        if number > 1:
            messages.append(("user", _later(number)))
        messages.append(("assistant", text if text.strip() else "(no reply)"))
    messages.append(("user", instruction))
    return messages


def _later(number: int) -> str:
    text = LATER_TURN if number == 2 else LATER_TURN_AGAIN
    return text.format(number=number, previous=number - 1)


# How much of each earlier turn a condensed form keeps, from the most to the least: its
# critique and answer at the first levels, then its answer alone.
CONDENSED_CHARS = (1500, 600, 300, 150, 80, 40, 20)
_ANSWER_ONLY_BELOW = 300

CONDENSED_NOTE = (
    "The earlier turns are shown condensed (their critique and answer, shortened) so that "
    "they fit the model's context window; their full reasoning is not shown."
)


def condense_turn(critique: str | None, answer: str, chars: int) -> str:
    """A turn cut down to its critique and answer (or just its answer) in about `chars`."""
    answer_part = f"Answer: {clip(answer, chars)}"
    if critique and chars >= _ANSWER_ONLY_BELOW:
        return f"Critique: {clip(critique, chars // 2)}\n{answer_part}"
    return answer_part


def clip(text: str, chars: int) -> str:
    """`text` cut to about `chars` characters at a word boundary, marked when cut."""
    text = " ".join(text.split())
    if len(text) <= chars:
        return text
    cut = text[:chars].rsplit(" ", 1)[0] or text[:chars]
    return cut + " […]"


def condensed_later_turn_messages(
    question: str, digests: Sequence[str], *, compact: bool = False
) -> list[tuple[str, str]]:
    """Turn k >= 2 when the earlier turns in full do not fit: their condensed forms, in one
    message after the question. Shorter than the conversation (the earlier instructions are
    left out), and it still begins with the run's system prompt and question; `compact` swaps
    in a shorter system prompt (and loses that shared beginning) for the tightest windows."""
    instruction = LATER_TURN.format(number=len(digests) + 1, previous=len(digests))
    return _condensed(question, digests, instruction, compact)


def condensed_synthesis_messages(
    question: str, digests: Sequence[str], *, compact: bool = False
) -> list[tuple[str, str]]:
    """The synthesis when the turns in full do not fit: their condensed forms."""
    return _condensed(question, digests, SYNTHESIS.format(count=len(digests)), compact)


def _condensed(
    question: str, digests: Sequence[str], instruction: str, compact: bool
) -> list[tuple[str, str]]:
    labelled = "\n\n".join(
        f'<turn number="{i}">\n{text.strip()}\n</turn>' for i, text in enumerate(digests, 1)
    )
    if compact:
        body = f"{_question(question)}\n\n{CONDENSED_NOTE}\n\n{labelled}\n\n{instruction}"
        return [("system", COMPACT_SYSTEM), ("user", body)]
    # The bare question first, as turn 1 was asked, so the request begins like turn 1's.
    body = f"{question}\n\n{CONDENSED_NOTE}\n\n{labelled}\n\n{instruction}"
    return [("system", REFINE_SYSTEM), ("user", body)]


def single_messages(question: str) -> list[tuple[str, str]]:
    """The single-turn baseline: the bare question, no system prompt, no scaffold."""
    return [("user", question)]


# -- the steps (g1) mode ---------------------------------------------------------------------
# The keys below are a contract with `steps.py`; the wording around them is ours.

STEPS_SYSTEM = """\
You are a careful problem solver who thinks out loud, one step at a time. Each of your replies
is exactly one reasoning step, written as a single JSON object and nothing else:

{{"title": "...", "content": "...", "next_action": "continue"}}

- "title": a few words naming what this step does.
- "content": the reasoning of this step, in full sentences, with any working shown: a
  paragraph or two, not an essay (a longer thought carries on in the next step).
- "next_action": "continue" while more steps are needed, or "final_answer" once you are sure
  enough to answer. No other value is allowed.

How to reason:
- Take at least {min_steps} steps before you choose "final_answer"; you have at most
  {max_steps}. Spend the first on understanding what is actually being asked.
- Solve the problem in more than one way when you can, and compare the results.
- Look for other answers you could have missed and say why you rule them out.
- Re-check for real: redo the decisive calculation or count from scratch instead of re-reading
  it, and test your answer against every condition in the question. Assume an earlier step can
  be wrong, and fix it in a later step when it is.
- Say plainly where you are unsure, and what would settle it.

Reply with the JSON object only: no code fence, no text before or after it."""

STEPS_NEXT = "Continue with step {number}, as one JSON object."

STEPS_TOO_EARLY = """\
That was step {taken}; take at least {min_steps} steps before "final_answer". Use step
{number} to test your answer: try a different method, or look for an answer you have not yet
considered. Reply with step {number} as one JSON object."""

STEPS_RETRY = """\
Your last reply could not be used as a step: {problem}.
Reply again with step {number} as a single JSON object with the keys "title", "content" and
"next_action" ("continue" or "final_answer"), each non-empty, and nothing else."""

STEPS_BRIEF = """Your reply ran past its length limit before the JSON object was closed. Keep this step short:
a title, a paragraph of reasoning at most, and next_action; the next step can carry on."""

STEPS_FINAL_SYSTEM = """\
You have been reasoning about the user's question one step at a time; your steps appear in
this conversation as JSON objects. That phase is over. Now answer the question."""

STEPS_FINAL = """\
Give your final answer to the question now, based on the steps above. Write plain text, not
JSON: no braces, no keys, no code fence around the answer. If the question asks for a
particular form of answer (a single letter for multiple choice, a number, a word, a list,
code), give exactly that form. Do not repeat the reasoning; one or two sentences of
justification at most."""


def steps_messages(question: str, min_steps: int, max_steps: int) -> list[tuple[str, str]]:
    """The start of a steps run: the step format and rules, then the bare question."""
    system = STEPS_SYSTEM.format(min_steps=min_steps, max_steps=max_steps)
    return [("system", system), ("user", question)]


def next_step_message(number: int) -> str:
    """What asks for step `number` after a step that said "continue"."""
    return STEPS_NEXT.format(number=number)


def too_early_message(taken: int, min_steps: int) -> str:
    """The reply to a "final_answer" given before the minimum number of steps."""
    return STEPS_TOO_EARLY.format(taken=taken, min_steps=min_steps, number=taken + 1)


def step_retry_message(number: int, problem: str, *, brief: bool = False) -> str:
    """What asks again for step `number` after a reply that was not a valid step; `brief`
    adds a reminder to keep it short, after a reply cut off by its length limit."""
    text = STEPS_RETRY.format(number=number, problem=problem)
    return f"{text}\n\n{STEPS_BRIEF}" if brief else text


VOTE_SAMPLE = """\
Answer the user's question. Think it through step by step first, checking any arithmetic,
counts and units as you go.

Then finish with one last line of this form and nothing after it:

Answer: <your final answer>

Keep that final answer short and in a form that can be compared with other answers: just the
number (no units or working), just the letter of a multiple-choice option, just yes or no, or
the fewest words that state it."""


def vote_sample_messages(question: str) -> list[tuple[str, str]]:
    """One vote sample: the question, with the last line it must end on."""
    return [("system", VOTE_SAMPLE), ("user", question)]


DRAFTS_SYSTEM = """\
You help answer the user's question in two ways, and each request says which it wants: either
a draft of your own answer, written independently, or, as the editor, one final answer made
from several drafts that others wrote independently."""

DRAFT = """\
Write a careful, complete answer to the question. Reason it out in numbered steps, check the
steps that decide the result, and finish with your answer stated plainly."""

DRAFTS_SYNTHESIS = """\
You are the editor. Several people drafted answers to the question independently; their
drafts appear above inside <draft> tags. They may disagree and any of them may be wrong,
including in the same way. Judge each draft by whether its reasoning survives checking, not
by how many drafts share its answer, and write the one best final answer from the {count}
draft(s).

Reply in markdown with exactly these five sections, in this order:

## Analysis of Drafts
For each draft in turn, what approach it takes, what it gets right and where it goes wrong.

## Comparison
Where the drafts agree, where they part ways, and which line of reasoning holds up.

## Final Reasoning
Numbered steps (1., 2., 3., ...), each followed by a line that begins with **Explanation:**,
leading to the final answer. Re-check the decisive steps yourself.

## Comprehensive Final Answer
The complete answer, with the detail the question needs.

## Concise Answer
At most two or three sentences giving the answer directly, in whatever format the question
asked for (a letter, a number, a word)."""


def draft_messages(question: str) -> list[tuple[str, str]]:
    """One independent draft: the run's system prompt, the question, the draft's instruction."""
    return [("system", DRAFTS_SYSTEM), ("user", f"{_question(question)}\n\n{DRAFT}")]


def drafts_synthesis_messages(question: str, drafts: Sequence[str]) -> list[tuple[str, str]]:
    """The drafts' synthesis: the same system prompt and question as every draft, then every
    draft, labelled, and the editor's instruction."""
    labelled = "\n\n".join(
        f'<draft number="{n}">\n{text.strip()}\n</draft>' for n, text in enumerate(drafts, 1)
    )
    instruction = DRAFTS_SYNTHESIS.format(count=len(drafts))
    return [
        ("system", DRAFTS_SYSTEM),
        ("user", f"{_question(question)}\n\n{labelled}\n\n{instruction}"),
    ]


def _question(question: str) -> str:
    return f"<question>\n{question}\n</question>"


REFLECT = """\
Work on the user's question in small steps, and stop now and then to judge how it is going.

You have a budget of {budget} steps. You need not spend them all, but you cannot have more.

- Write each step inside <step>...</step>: one move in your reasoning, a few sentences at most.
  After each step write how many steps you have left, as <count>N</count>.
- After every {every} steps, look back before going on: inside <reflection>...</reflection>
  say what is working, what is doubtful and what you will do next. Then score your progress
  so far inside <reward>...</reward> with one number from 0.0 to 1.0:
  - 0.8 or higher: the approach is sound; carry on with it.
  - 0.5 to 0.7: it is partly right; adjust it in the next steps.
  - below 0.5: it is not working; go back and try a different approach, and say which.
  Be honest: a high score for a shaky approach only wastes your remaining steps.
- When you are sure of the result, or your steps are running out, write your final answer
  inside <answer>...</answer>, stated plainly and in any format the question asks for. Then
  write one last <reflection> on the whole solution and a final <reward>.

Write nothing outside these tags."""

REFLECT_CLOSE = """\
{why} {steps} your final answer inside <answer>...</answer>, stated plainly and in any format \
the question asks for, then one last <reflection> on the whole solution and a final <reward> \
from 0.0 to 1.0."""


def reflect_messages(question: str, budget: int, every: int) -> list[tuple[str, str]]:
    """The reflect chain: the tags, the step budget and how often to reflect, then the question."""
    return [("system", REFLECT.format(budget=budget, every=every)), ("user", question)]


def reflect_close_messages(
    question: str, budget: int, every: int, so_far: str, why: str, left: int
) -> list[tuple[str, str]]:
    """The call that asks a chain stopped before its answer for the answer: the chain as far
    as it went, why it stopped, and how many steps it may still take (`left`) first."""
    steps = (
        "Write no more steps: give"
        if left <= 0
        else f"Take at most {left} more step{'s' if left > 1 else ''}, as few as you need, then give"
    )
    return [
        *reflect_messages(question, budget, every),
        ("assistant", so_far.strip() or "(nothing yet)"),
        ("user", REFLECT_CLOSE.format(why=why, steps=steps)),
    ]
