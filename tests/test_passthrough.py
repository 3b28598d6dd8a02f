"""What a caller asks of the upstream model beside its question (run/passthrough.py): every
mode's final call carries the request's response_format, tools and stop; every call carries
its sampling; tool calls come back through the provider's stream into the run's record."""

from __future__ import annotations

import json

import pytest

from llamaberry import Engine
from llamaberry.engine import collect
from llamaberry.run.passthrough import Passthrough
from llamaberry.testing import FakeServer, RecordedRequest, Reply

from .conftest import refine_script

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "Count",
        "schema": {
            "type": "object",
            "properties": {"count": {"type": "integer"}},
            "required": ["count"],
            "additionalProperties": False,
        },
    },
}
CALL = {"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_1"}


def _final_or_text(final: Reply, text: str = "1. think\n\nAnswer: 3"):
    """A handler: the request that declares tools or a format gets `final`, any other `text`
    (refine's calls their section contract)."""

    def handler(request: RecordedRequest) -> str | Reply:
        if request.tools or request.json_mode:
            return final
        if "Concise Answer" in (request.user or "") or "## Critique" in (request.user or ""):
            return refine_script(request)
        if "## Reasoning" in (request.system or ""):  # refine's turn 1
            return refine_script(request)
        return text

    return handler


@pytest.fixture
async def engine(server: FakeServer):
    async with Engine(
        provider="openai", api_key="k", base_url=server.openai_base_url, history=False
    ) as built:
        yield built


@pytest.mark.parametrize(
    ("mode", "options", "final_kind"),
    [
        ("single", {}, "answer"),
        ("refine", {"turns": 2}, "synthesis"),
        ("drafts", {"drafts": 2}, "synthesis"),
        ("vote", {"samples": 2}, "answer"),
    ],
)
async def test_only_the_final_call_carries_tools_and_gets_the_tool_call_back(
    server: FakeServer, engine: Engine, mode: str, options: dict, final_kind: str
):
    server.reply_with(_final_or_text(Reply("", tool_calls=(CALL,))))
    asked = Passthrough.of({"tools": TOOLS, "tool_choice": "auto", "stop": ["END"], "top_p": 0.5})
    run = await collect(engine.stream(mode, "Weather in Paris?", passthrough=asked, **options))
    with_tools = [r for r in server.requests if r.tools]
    assert len(with_tools) == 1  # the final call only
    assert with_tools[0].body["tool_choice"] == "auto"
    assert with_tools[0].body["stop"] == ["END"]
    assert all("stop" not in r.body for r in server.requests if not r.tools)
    assert all(r.body["top_p"] == 0.5 for r in server.requests)  # sampling: every call
    final = [c for c in run.calls if c.final]
    assert [c.kind for c in final] == [final_kind]
    assert final[0].finish_reason == "tool_calls"
    assert final[0].tool_calls == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
        }
    ]


async def test_a_final_call_with_a_format_is_told_to_answer_in_it_and_comes_back_whole(
    server: FakeServer, engine: Engine
):
    server.reply_with(_final_or_text(Reply('{"count": 3}')))
    asked = Passthrough.of({"response_format": SCHEMA})
    run = await collect(engine.stream("refine", "How many r?", turns=1, passthrough=asked))
    synthesis = server.requests[-1]
    assert synthesis.body["response_format"] == SCHEMA
    assert not synthesis.stream
    assert synthesis.messages[-1]["role"] == "user"  # the instruction ends the user's turn
    assert synthesis.messages[-1]["content"].endswith(
        "that JSON takes the place of any other layout described above."
    )
    assert synthesis.messages[-2]["role"] != "user"
    assert run.calls[-1].final and run.calls[-1].reply == '{"count": 3}'
    assert run.calls[-1].response_format == "json_schema"
    assert not any(r.json_mode for r in server.requests[:-1])


async def test_the_seed_moves_on_with_the_index_so_samples_still_differ(
    server: FakeServer, engine: Engine
):
    server.reply_with(lambda request: "Answer: 3")
    asked = Passthrough.of({"seed": 7})
    await collect(engine.stream("vote", "How many r?", samples=3, passthrough=asked))
    assert sorted(r.body["seed"] for r in server.requests) == [7, 8, 9]


async def test_single_sends_the_conversation_as_it_came(server: FakeServer, engine: Engine):
    conversation = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    asked = Passthrough.of({"tools": TOOLS}, messages=conversation)
    await collect(engine.stream("single", "What is this?", passthrough=asked))
    assert server.requests[-1].messages == conversation


async def test_without_a_passthrough_nothing_extra_is_sent(server: FakeServer, engine: Engine):
    server.reply_with(refine_script)
    run = await collect(engine.stream("refine", "How many r?", turns=1))
    sent = server.requests[-1].body
    assert not {"tools", "response_format", "stop", "seed", "top_p"} & set(sent)
    assert run.calls[-1].final and run.calls[-1].tool_calls == []


async def test_steps_final_answer_carries_the_tools(server: FakeServer, engine: Engine):
    steps = [
        json.dumps({"title": f"T{n}", "content": f"step {n}", "next_action": action})
        for n, action in ((1, "continue"), (2, "final_answer"))
    ]
    server.enqueue(*steps, Reply("", tool_calls=(CALL,)))
    asked = Passthrough.of({"tools": TOOLS})
    run = await collect(
        engine.stream("steps", "Weather?", min_steps=1, max_steps=2, passthrough=asked)
    )
    assert [bool(r.tools) for r in server.requests] == [False, False, True]
    assert run.calls[-1].final and run.calls[-1].tool_calls[0]["function"]["name"] == "get_weather"


async def test_reflect_makes_one_closing_call_in_the_asked_form(server: FakeServer, engine: Engine):
    chain = "<step>Spell it: s-t-r-a-w-b-e-r-r-y.</step>\n<answer>3</answer>"
    server.enqueue(chain, Reply('{"count": 3}'))
    asked = Passthrough.of({"response_format": SCHEMA})
    run = await collect(engine.stream("reflect", "How many r?", passthrough=asked))
    assert [r.json_mode for r in server.requests] == [False, True]
    assert "<answer>\n3\n</answer>" in (server.requests[-1].user or "")
    assert run.answer == "3" and run.calls[-1].final and run.calls[-1].reply == '{"count": 3}'


async def test_without_a_format_or_tools_vote_and_reflect_make_no_closing_call(
    server: FakeServer, engine: Engine
):
    server.reply_with(lambda request: "Answer: 3")
    run = await collect(engine.stream("vote", "How many r?", samples=2))
    assert len(server.requests) == 2 and not any(c.final for c in run.calls)
