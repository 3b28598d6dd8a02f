"""The refine mode end to end: real SDKs, fake server, parsed results and events."""

from __future__ import annotations

import pytest

from llamaberry import (
    CallFinished,
    CallStarted,
    Engine,
    RunFinished,
    RunStarted,
    Synthesis,
    TextDelta,
    Turn,
    Usage,
)
from llamaberry.modes import prompts
from llamaberry.testing import FakeServer, RecordedRequest, Reply

from .conftest import FIRST_TURN, refine_script, replies_in, said

QUESTION = 'How many times does the letter r appear in "strawberry"?'


async def test_three_turns_make_four_requests(server: FakeServer, engine: Engine):
    server.reply_with(refine_script)
    run = await engine.refine(QUESTION)
    assert len(server.requests) == 4
    assert [len(run.result.turns), run.result.synthesis is not None] == [3, True]


@pytest.mark.parametrize("turns", [1, 2, 5])
async def test_n_turns_make_n_plus_one_requests(server: FakeServer, engine: Engine, turns: int):
    server.reply_with(refine_script)
    run = await engine.refine(QUESTION, turns=turns)
    assert len(server.requests) == turns + 1
    assert [t.index for t in run.result.turns] == list(range(1, turns + 1))


async def test_first_turn_is_given_the_bare_question(server: FakeServer, engine: Engine):
    server.reply_with(refine_script)
    await engine.refine(QUESTION)
    first = server.requests[0]
    # Asked as before the prefix layout: turn 1's two sections as the system prompt.
    assert first.user == QUESTION
    assert "## Reasoning" in first.system and "## Answer" in first.system
    assert first.system == prompts.REFINE_SYSTEM


async def test_second_turn_is_given_the_first_turn_verbatim(server: FakeServer, engine: Engine):
    server.reply_with(refine_script)
    await engine.refine(QUESTION)
    second = server.requests[1]
    assert QUESTION in said(second)
    assert replies_in(second) == [FIRST_TURN]
    assert "Turn 2" in second.user
    assert "## Critique" in second.user and "## Updated Answer" in second.user


async def test_each_later_turn_is_given_every_earlier_turn(server: FakeServer, engine: Engine):
    server.reply_with(refine_script)
    run = await engine.refine(QUESTION, turns=4)
    fourth = server.requests[3]
    assert replies_in(fourth) == [turn.content for turn in run.result.turns[:3]]
    assert run.result.turns[3].content not in said(fourth)


async def test_synthesis_is_given_the_question_and_all_turns(server: FakeServer, engine: Engine):
    server.reply_with(refine_script)
    run = await engine.refine(QUESTION)
    synthesis = server.requests[-1]
    assert QUESTION in said(synthesis)
    assert replies_in(synthesis) == [turn.content for turn in run.result.turns]
    assert "your 3 reasoning turn(s)" in synthesis.user
    assert "## Concise Answer" in synthesis.user


async def test_answer_is_the_synthesis_concise_answer(server: FakeServer, engine: Engine):
    server.reply_with(refine_script)
    run = await engine.refine(QUESTION)
    assert run.answer == 'There are 3 r\'s in "strawberry".'
    assert run.result.synthesis.comprehensive_answer.startswith('The word "strawberry"')
    assert run.result.turns[0].answer == "3"
    assert run.result.turns[1].answer == "3 (turn 2)"
    assert run.result.turns[1].critique.startswith("Turn 1 counted correctly")
    assert [s.number for s in run.result.turns[0].reasoning] == [1, 2]
    assert run.result.turns[0].reasoning[1].explanation == "Three positions hold the letter r."


async def test_streamed_deltas_concatenate_to_each_call_text(server: FakeServer, engine: Engine):
    server.reply_with(refine_script)
    texts: dict[tuple[str, int], str] = {}
    finished: dict[tuple[str, int], str] = {}
    async for event in engine.refine_stream(QUESTION):
        if isinstance(event, TextDelta):
            key = (event.kind, event.index)
            texts[key] = texts.get(key, "") + event.text
        elif isinstance(event, CallFinished):
            finished[(event.kind, event.index)] = event.result.content
    assert set(texts) == {("turn", 1), ("turn", 2), ("turn", 3), ("synthesis", 1)}
    assert texts == finished
    # Word-sized chunks: streaming really arrived in pieces.
    assert all(r.stream for r in server.requests)


async def test_events_arrive_in_order(server: FakeServer, engine: Engine):
    server.reply_with(refine_script)
    shape = []
    async for event in engine.refine_stream(QUESTION, turns=2):
        if isinstance(event, TextDelta):
            if shape[-1] != "delta":
                shape.append("delta")
        elif isinstance(event, RunStarted | RunFinished):
            shape.append(event.type)
        else:
            shape.append(f"{event.type}:{event.kind}:{event.index}")
    assert shape == [
        "run_started",
        "call_started:turn:1",
        "delta",
        "call_finished:turn:1",
        "call_started:turn:2",
        "delta",
        "call_finished:turn:2",
        "call_started:synthesis:1",
        "delta",
        "call_finished:synthesis:1",
        "run_finished",
    ]


async def test_call_finished_carries_parsed_results(server: FakeServer, engine: Engine):
    server.reply_with(refine_script)
    results = [
        e.result async for e in engine.refine_stream(QUESTION) if isinstance(e, CallFinished)
    ]
    assert [type(r) for r in results] == [Turn, Turn, Turn, Synthesis]


async def test_usage_is_kept_per_call_and_summed_per_run(server: FakeServer, engine: Engine):
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    server.reply_with(lambda request: Reply(refine_script(request), usage=usage))
    run = await engine.refine(QUESTION)
    per_call = Usage(**usage)
    assert all(t.usage == per_call for t in run.result.turns)
    assert run.result.synthesis.usage == per_call
    assert run.usage == Usage(prompt_tokens=400, completion_tokens=80, total_tokens=480)


async def test_usage_comes_from_the_server_not_an_estimate(server: FakeServer, engine: Engine):
    server.reply_with(refine_script)
    run = await engine.refine(QUESTION, turns=1)
    # The fake server counts completion tokens as words of the reply.
    assert run.result.turns[0].usage.completion_tokens == len(FIRST_TURN.split())


async def test_seconds_are_kept_per_call_and_for_the_run(server: FakeServer, engine: Engine):
    server.reply_with(lambda request: Reply(refine_script(request), latency=0.05))
    run = await engine.refine(QUESTION, turns=2)
    assert all(t.seconds >= 0.05 for t in run.result.turns)
    assert run.result.synthesis.seconds >= 0.05
    assert run.seconds >= 0.15


async def test_the_call_log_keeps_messages_and_replies(server: FakeServer, engine: Engine):
    server.reply_with(refine_script)
    run = await engine.refine(QUESTION, turns=2)
    assert [(c.kind, c.index) for c in run.calls] == [("turn", 1), ("turn", 2), ("synthesis", 1)]
    assert run.calls[0].messages[-1].content == QUESTION
    assert run.calls[0].reply == FIRST_TURN
    assert run.calls[1].messages[-1].content == server.requests[1].user


async def test_settings_reach_the_request(server: FakeServer, provider: str):
    server.reply_with(refine_script)
    base_url = server.groq_base_url if provider == "groq" else server.openai_base_url
    async with Engine(
        provider=provider,
        api_key="k",
        base_url=base_url,
        model="openai/gpt-oss-20b",
        temperature=0.2,
        max_tokens=1234,
        reasoning_effort="high",
    ) as engine:
        await engine.refine(QUESTION, turns=1)
    body = server.requests[0].body
    assert body["model"] == "openai/gpt-oss-20b"
    assert body["temperature"] == 0.2
    assert body["max_completion_tokens"] == 1234
    assert body["reasoning_effort"] == "high"


async def test_single_mode_sends_the_bare_question_once(server: FakeServer, engine: Engine):
    server.enqueue("Three.")
    run = await engine.single(QUESTION)
    assert len(server.requests) == 1
    assert server.requests[0].messages == [{"role": "user", "content": QUESTION}]
    assert run.mode == "single"
    assert run.answer == "Three."
    assert (
        run.result.turns[0].content == "Three." and getattr(run.result, "synthesis", None) is None
    )


async def test_many_runs_share_one_engine_concurrently(server: FakeServer, engine: Engine):
    import asyncio

    server.reply_with(lambda request: Reply(refine_script(request), latency=0.05))
    runs = await asyncio.gather(*(engine.refine(f"{QUESTION} #{i}", turns=1) for i in range(20)))
    assert len(server.requests) == 40
    assert all(r.ok for r in runs)
    assert len({r.id for r in runs}) == 20


async def test_call_started_precedes_the_first_token(server: FakeServer, engine: Engine):
    server.reply_with(lambda request: Reply(refine_script(request), chunk_delay=0.001))
    kinds = []
    async for event in engine.refine_stream(QUESTION, turns=1):
        kinds.append(type(event))
    assert kinds.index(CallStarted) < kinds.index(TextDelta)


async def test_the_first_tokens_reach_the_consumer_before_the_reply_is_finished(
    server: FakeServer, engine: Engine
):
    import time

    # Twenty words, 50 ms apart: the whole reply takes about a second to arrive.
    server.enqueue(Reply(" ".join(f"w{i}" for i in range(20)), chunk_delay=0.05))
    await engine.models()  # connect first, so the timing below is about streaming only
    started = time.perf_counter()
    first = last = None
    async for event in engine.single_stream(QUESTION):
        if isinstance(event, TextDelta):
            first = first or time.perf_counter() - started
            last = time.perf_counter() - started
    assert last >= 0.9
    assert first < last / 2


async def test_a_run_records_the_turns_it_really_used(server: FakeServer, engine: Engine):
    server.reply_with(refine_script)
    run = await engine.refine(QUESTION, turns=2)
    assert run.settings["turns"] == 2
    assert run.settings["model"] == "openai/gpt-oss-120b"
    assert "api_key" not in run.settings


async def test_a_chat_client_of_ones_own_plugs_into_the_engine():
    # ChatClient is the public seam: an in-process client with no SDK and no sockets.
    from llamaberry import ChatClient
    from llamaberry.providers.base import Completion, Delta

    class Canned(ChatClient):
        provider = "canned"

        async def stream(self, messages, *, json_mode=False, max_tokens=None):
            text = f"echo of {len(messages)} messages"
            for word in text.split(" "):
                yield Delta(word + " ")
            yield Completion(text=text + " ", finish_reason="stop", usage=Usage(), seconds=0.0)

    async with Engine(client=Canned(model="canned-1"), history=False) as engine:
        run = await engine.refine(QUESTION, turns=2)
    assert run.provider == "canned" and run.model == "canned-1"
    # One growing conversation: system and question, then each reply and the next instruction.
    assert [t.content for t in run.result.turns] == ["echo of 2 messages ", "echo of 4 messages "]
    assert run.calls[-1].reply == "echo of 6 messages "


# -- a model that writes our prompt back ------------------------------------------------------


def echoing_model(request: RecordedRequest) -> str:
    """What the embedded SmolLM2 does: turns that answer, then a "synthesis" that is our own
    instruction written back, with a stray tag and a turn copied in."""
    asked = request.user or ""
    if "## Concise Answer" in asked:
        instruction = " ".join(asked.split("\n\n")[0].split())  # our first paragraph
        return f"{instruction}\n</turn>\nThere are 3 r letters.\n\nTurn 2:"
    if "## Critique" in asked:
        return "Turn 2:\nThere are 3 r letters, checked again."
    return "There are 3 r letters."


async def test_a_synthesis_that_echoes_the_prompt_falls_back_to_the_best_turn_and_says_so(
    server: FakeServer, engine: Engine
):
    server.reply_with(echoing_model)
    run = await engine.refine("How many r in strawberry?", turns=2)
    assert run.status == "ok"
    # Turn 2's own words, without the tag and label it wrote back.
    assert run.result.turns[1].answer == "There are 3 r letters, checked again."
    assert run.answer == "There are 3 r letters, checked again."
    assert "</turn>" not in run.answer and "Final review" not in run.answer
    assert any("the answer is turn 2's" in note for note in run.notes)
    # Nothing is lost: the synthesis keeps its reply as written.
    assert run.result.synthesis.content.startswith("Final review:")


async def test_a_synthesis_with_words_of_its_own_keeps_them_without_the_echo(
    server: FakeServer, engine: Engine
):
    def model(request: RecordedRequest) -> str:
        if "## Concise Answer" in (request.user or ""):
            return "</turn>\nThe word has three r's: s-t-r-a-w-b-e-r-r-y."
        return "There are 3 r letters."

    server.reply_with(model)
    run = await engine.refine("How many r in strawberry?", turns=2)
    assert run.answer == "The word has three r's: s-t-r-a-w-b-e-r-r-y."
    assert any("left out of the answer" in note for note in run.notes)


def splicing_model(request: RecordedRequest) -> str:
    """What the embedded SmolLM2 did after issue 29's prompts: answers in its turns, then a
    synthesis (and a last turn) that splice halves of our instructions together, no sentence of
    ours whole."""
    asked = request.user or ""
    if "## Concise Answer" in asked:
        return "## Concise Answer\nChange the earlier answer only if your reasoning proves nothing."
    if "Turn 3:" in asked:
        return (
            "## Updated Answer\nYour answer now, stated plainly, in any format the question asked."
        )
    if "## Critique" in asked:
        return "## Updated Answer\nThere are 3 r letters, checked again."
    return "## Answer\nThere are 3 r letters."


async def test_a_synthesis_that_splices_our_instructions_falls_back_to_the_best_turn(
    server: FakeServer, engine: Engine
):
    server.reply_with(splicing_model)
    run = await engine.refine("How many r in strawberry?", turns=3)
    assert run.status == "ok"
    # Turn 3 only wrote back our instruction, reworded: it has no answer of its own.
    assert run.result.turns[2].answer == ""
    assert run.answer == "There are 3 r letters, checked again."
    assert any("the answer is turn 2's" in note for note in run.notes)
    assert run.result.synthesis.content.endswith("your reasoning proves nothing.")


async def test_a_well_formed_synthesis_is_untouched(server: FakeServer, engine: Engine):
    server.reply_with(refine_script)
    run = await engine.refine("How many r in strawberry?", turns=2)
    assert run.answer == 'There are 3 r\'s in "strawberry".'
    assert not any("prompt" in note for note in run.notes)
