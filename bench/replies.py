"""The fake model's side of a refine run: well-formed replies for each section contract.

Replies are deterministic, so the engine and the raw-SDK baseline receive byte-identical
streams and therefore send byte-identical follow-up requests.
"""

from __future__ import annotations

from llamaberry.testing import RecordedRequest, Reply

QUESTION = "A train leaves at 14:05 and arrives at 17:50. How long is the journey in minutes?"


def _steps(count: int) -> str:
    return "\n".join(
        f"{n}. Step {n} subtracts the departure time from the arrival time once more.\n"
        f"**Explanation:** Checking the hours and the minutes separately avoids a slip."
        for n in range(1, count + 1)
    )


def first_turn(steps: int) -> str:
    """Turn 1 in the `## Reasoning` / `## Answer` structure."""
    return f"## Reasoning\n{_steps(steps)}\n\n## Answer\n225 minutes"


def later_turn(index: int, steps: int) -> str:
    """Turn k >= 2 in the critique structure."""
    return (
        f"## Critique\nTurn {index - 1} subtracted correctly; I re-checked the minutes.\n\n"
        f"## New Reasoning\n{_steps(steps)}\n\n## Updated Answer\n225 minutes (turn {index})"
    )


def synthesis(steps: int) -> str:
    """The synthesis in its five-section structure."""
    return (
        "## Analysis of Turns\nEvery turn subtracted the times the same way.\n\n"
        "## Comparison\nAll turns agree and the subtraction holds.\n\n"
        f"## Final Reasoning\n{_steps(steps)}\n\n"
        "## Comprehensive Final Answer\nFrom 14:05 to 17:50 is 3 hours 45 minutes.\n\n"
        "## Concise Answer\nThe journey takes 225 minutes."
    )


def make_script(steps: int = 3, chunk_words: int = 1):
    """A `reply_with` handler answering each refine call by its instruction."""
    replies = {
        "first": first_turn(steps),
        "synthesis": synthesis(steps),
        **{index: later_turn(index, steps) for index in range(2, 11)},
    }

    def script(request: RecordedRequest) -> Reply:
        # Each call's own instruction (its sections) is its last message; the turns before it
        # are its assistant messages, or <turn> tags when they went out condensed.
        asked = request.user or ""
        earlier = sum(1 for m in request.messages if m.get("role") == "assistant")
        if "## Concise Answer" in asked:
            text = replies["synthesis"]
        elif "## Critique" in asked:
            text = replies[max(earlier, asked.count('<turn number="')) + 1]
        else:
            text = replies["first"]
        return Reply(text, chunk_words=chunk_words)

    return script
