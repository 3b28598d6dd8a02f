"""`llamaberry serve` as a drop-in endpoint for the clients people use: structured output and
tools for every mode, thinking every client can show, and the OpenAI behaviours clients rely
on. The real `openai` SDK (and httpx, for what the SDK hides) talks to the endpoint, which runs
modes on the fake upstream.

LangChain is not a dependency of the project: the two LangChain tests send exactly the request
bodies `langchain-openai` 1.8.1 sent for `ChatOpenAI(model="refine").with_structured_output(
Count)` and `.bind_tools([get_weather])` (and the tool round after it), captured from a real
run against this endpoint, and read the reply as LangChain does (`json.loads` of the content
into the pydantic model; `tool_calls[*].function.arguments`)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from pydantic import BaseModel

from llamaberry.testing import FakeServer, Fault, RecordedRequest, Reply

from .conftest import refine_script
from .test_serve import QUESTION, Endpoint, start_endpoint

# What langchain-openai sent for with_structured_output(Count) (method json_schema, its default).
LANGCHAIN_STRUCTURED = {
    "model": "refine",
    "stream": False,
    "messages": [
        {
            "content": "How many r in strawberry? Reply as JSON with letter and count.",
            "role": "user",
        }
    ],
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "schema": {
                "description": "How many times a letter occurs.",
                "properties": {
                    "letter": {"title": "Letter", "type": "string"},
                    "count": {"title": "Count", "type": "integer"},
                },
                "required": ["letter", "count"],
                "title": "Count",
                "type": "object",
                "additionalProperties": False,
            },
            "name": "Count",
            "strict": True,
        },
    },
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "type": "object",
        },
    },
}
# What it sent for bind_tools([get_weather]).invoke(...), and for the round after the tool ran.
LANGCHAIN_TOOLS = {
    "model": "refine",
    "stream": False,
    "messages": [{"content": "What's the weather in Paris?", "role": "user"}],
    "tools": [WEATHER_TOOL],
}
LANGCHAIN_TOOL_ROUND = {
    "model": "refine",
    "stream": False,
    "messages": [
        {"content": "Answer in one line.", "role": "system"},
        {"content": "What's the weather in Paris?", "role": "user"},
        {
            "content": None,
            "role": "assistant",
            "tool_calls": [
                {
                    "type": "function",
                    "id": "call_fake0",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"content": "sunny, 21C", "role": "tool", "tool_call_id": "call_fake0"},
    ],
}


class Count(BaseModel):
    """How many times a letter occurs."""

    letter: str
    count: int


def upstream(final: Reply):
    """Refine's calls answered by their section contract; the one that carries the request's
    tools or JSON format (the final call) gets `final`."""

    def handler(request: RecordedRequest) -> str | Reply:
        if request.tools or request.json_mode:
            return final
        return Reply(refine_script(request), reasoning="counting the letters")

    return handler


@pytest.fixture
async def endpoint(server: FakeServer):
    """The endpoint with its default reasoning format (inline <think>)."""
    async for running in start_endpoint(server, reasoning="think"):
        yield running


async def post(endpoint: Endpoint, body: dict, path: str = "/chat/completions") -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(endpoint.url + path, json=body)


async def sse(endpoint: Endpoint, body: dict) -> tuple[int, list[dict], httpx.Headers]:
    """A streamed request's status, its data events (parsed) and its headers."""
    events = []
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream("POST", endpoint.url + "/chat/completions", json=body) as response,
    ):
        if response.headers["content-type"].startswith("application/json"):
            return response.status_code, [json.loads(await response.aread())], response.headers
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
        return response.status_code, events, response.headers


# -- LangChain's requests, as it sends them ------------------------------------------------------


async def test_langchain_with_structured_output_against_refine_gets_a_valid_instance(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(upstream(Reply('{"letter": "r", "count": 3}')))
    response = await post(endpoint, LANGCHAIN_STRUCTURED)
    assert response.status_code == 200
    message = response.json()["choices"][0]["message"]
    assert Count.model_validate(json.loads(message["content"])) == Count(letter="r", count=3)
    # The thinking came first (the turns), and stays out of the content that must parse.
    assert "### Turn 1" in message["reasoning_content"]
    turns, synthesis = server.requests[:-1], server.requests[-1]
    assert len(turns) == 3 and not any(r.json_mode for r in turns)
    assert synthesis.body["response_format"] == LANGCHAIN_STRUCTURED["response_format"]


async def test_langchain_bind_tools_gets_a_tool_call_after_the_thinking(
    server: FakeServer, endpoint: Endpoint
):
    call = {"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_fake0"}
    server.reply_with(upstream(Reply("", tool_calls=(call,))))
    response = await post(endpoint, LANGCHAIN_TOOLS)
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [made] = choice["message"]["tool_calls"]
    assert made["id"] == "call_fake0" and made["function"]["name"] == "get_weather"
    assert json.loads(made["function"]["arguments"]) == {"city": "Paris"}
    assert "### Turn 1" in choice["message"]["reasoning_content"]
    assert [bool(r.tools) for r in server.requests] == [False, False, False, True]


async def test_the_tool_result_round_is_the_conversation_of_the_next_request(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(refine_script)
    response = await post(endpoint, LANGCHAIN_TOOL_ROUND)
    assert response.status_code == 200
    first_turn = server.requests[0]
    # The caller's system message stays a system message (ahead of the mode's own).
    assert first_turn.messages[0]["role"] == "system"
    assert first_turn.messages[0]["content"].startswith("Answer in one line.")
    question = first_turn.user or ""
    assert '<tool_call id="call_fake0" name="get_weather">{"city": "Paris"}</tool_call>' in question
    assert '<message role="tool" tool_call_id="call_fake0">\nsunny, 21C' in question


async def test_tool_calls_stream_out_after_the_thinking(server: FakeServer, endpoint: Endpoint):
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    server.reply_with(upstream(Reply("", tool_calls=(call,))))
    stream = await endpoint.client.chat.completions.create(
        model="refine",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        stream=True,
    )
    thinking, calls, finish = "", [], None
    async for chunk in stream:
        for choice in chunk.choices:
            thinking += getattr(choice.delta, "reasoning_content", None) or ""
            calls += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    assert "### Turn 1" in thinking
    assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]
    assert finish == "tool_calls"


# -- thinking every client can show ------------------------------------------------------------


async def test_by_default_the_thinking_is_inline_at_the_head_of_the_content(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(refine_script)
    reply = await endpoint.client.chat.completions.create(
        model="refine", messages=[{"role": "user", "content": QUESTION}]
    )
    content = reply.choices[0].message.content or ""
    assert content.startswith("<think>\n### Turn 1")
    thinking, _, answer = content.partition("</think>")
    assert "### Synthesis" in thinking
    assert answer.strip().startswith('The word "strawberry" contains the letter r three times.')
    assert getattr(reply.choices[0].message, "reasoning_content", None) is None

    stream = await endpoint.client.chat.completions.create(
        model="refine", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert streamed.startswith("<think>\n### Turn 1") and "\n</think>\n\nThe word" in streamed


@pytest.mark.parametrize("fmt", ["reasoning_content", "reasoning", "none"])
async def test_a_request_chooses_its_reasoning_format(
    server: FakeServer, endpoint: Endpoint, fmt: str
):
    server.reply_with(refine_script)
    body = {
        "model": "refine",
        "messages": [{"role": "user", "content": QUESTION}],
        "reasoning_format": fmt,
    }
    message = (await post(endpoint, body)).json()["choices"][0]["message"]
    assert "<think>" not in message["content"]
    if fmt == "none":
        assert not {"reasoning_content", "reasoning"} & set(message)
    else:
        assert "### Turn 1" in message[fmt]
    status, events, _ = await sse(endpoint, {**body, "stream": True})
    fields = {key for e in events for c in e["choices"] for key in c["delta"]}
    assert status == 200
    assert (fmt in fields) == (fmt != "none")


async def test_earlier_inline_thinking_echoed_back_is_never_sent_upstream(
    server: FakeServer, endpoint: Endpoint
):
    await endpoint.client.chat.completions.create(
        model="single",
        messages=[
            {"role": "user", "content": "How many r in strawberry?"},
            {"role": "assistant", "content": "<think>\nSECRET-WORK\n</think>\n\nThree."},
            {"role": "user", "content": "And in raspberry?"},
        ],
    )
    sent = server.requests[-1].messages
    assert "SECRET-WORK" not in json.dumps(sent)
    assert sent[1] == {"role": "assistant", "content": "Three."}


# -- what OpenAI's API does, done the same way -------------------------------------------------


async def test_finish_reason_is_length_when_the_final_call_was_cut_off(
    server: FakeServer, endpoint: Endpoint
):
    server.enqueue(Reply("a long answer that ran out", finish_reason="length"))
    reply = await endpoint.client.chat.completions.create(
        model="single", messages=[{"role": "user", "content": QUESTION}]
    )
    assert reply.choices[0].finish_reason == "length"
    server.enqueue(Reply("a long answer that ran out", finish_reason="length"))
    _, events, _ = await sse(
        endpoint,
        {"model": "single", "messages": [{"role": "user", "content": QUESTION}], "stream": True},
    )
    assert [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]] == [
        "length"
    ]


async def test_n_runs_n_independent_runs_and_returns_n_choices(
    server: FakeServer, endpoint: Endpoint
):
    reply = await endpoint.client.chat.completions.create(
        model="single", messages=[{"role": "user", "content": QUESTION}], n=3
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert len(server.requests) == 3
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 3 * len(f"echo: {QUESTION}".split())

    status, events, _ = await sse(
        endpoint,
        {
            "model": "single",
            "messages": [{"role": "user", "content": QUESTION}],
            "n": 2,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    finished = sorted(c["index"] for e in events for c in e["choices"] if c["finish_reason"])
    assert status == 200 and finished == [0, 1]
    assert sum(1 for e in events if e.get("usage")) == 1


async def test_sampling_parameters_reach_the_upstream_calls(server: FakeServer, endpoint: Endpoint):
    server.reply_with(refine_script)
    await endpoint.client.chat.completions.create(
        model="refine",
        messages=[{"role": "user", "content": QUESTION}],
        stop=["<END>"],
        seed=11,
        top_p=0.9,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        user="user-42",
        extra_body={"turns": 2},
    )
    turn1, turn2, synthesis = server.requests
    for sent in (turn1, turn2, synthesis):
        assert sent.body["top_p"] == 0.9 and sent.body["user"] == "user-42"
        assert sent.body["presence_penalty"] == 0.1 and sent.body["frequency_penalty"] == 0.2
    assert [r.body["seed"] for r in server.requests] == [11, 12, 11]  # moved on by call index
    # Stop sequences apply to the answer the client sees: the final call only.
    assert "stop" not in turn1.body and synthesis.body["stop"] == ["<END>"]


async def test_logprobs_pass_through_for_single_and_are_refused_elsewhere(
    server: FakeServer, endpoint: Endpoint
):
    reply = await endpoint.client.chat.completions.create(
        model="single", messages=[{"role": "user", "content": QUESTION}], logprobs=True
    )
    assert server.requests[-1].body["logprobs"] is True
    assert reply.choices[0].logprobs is not None
    assert (reply.choices[0].logprobs.content or [])[0].token == "echo: "
    with pytest.raises(openai.BadRequestError, match="single mode only") as caught:
        await endpoint.client.chat.completions.create(
            model="refine", messages=[{"role": "user", "content": QUESTION}], logprobs=True
        )
    assert caught.value.body["param"] == "logprobs"  # type: ignore[index]


async def test_a_system_message_is_a_system_message(server: FakeServer, endpoint: Endpoint):
    server.reply_with(refine_script)
    await endpoint.client.chat.completions.create(
        model="refine",
        messages=[
            {"role": "system", "content": "Answer like a pirate."},
            {"role": "user", "content": QUESTION},
        ],
        extra_body={"turns": 1},
    )
    for sent in server.requests:
        assert (sent.system or "").startswith("Answer like a pirate.")
        assert "pirate" not in (sent.user or "")


async def test_image_parts_pass_through_for_single_and_are_refused_elsewhere(
    server: FakeServer, endpoint: Endpoint
):
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    await endpoint.client.chat.completions.create(
        model="single",
        messages=[{"role": "user", "content": content}],  # type: ignore[list-item]
    )
    assert server.requests[-1].messages == [{"role": "user", "content": content}]
    with pytest.raises(openai.BadRequestError, match="single mode passes images"):
        await endpoint.client.chat.completions.create(
            model="refine",
            messages=[{"role": "user", "content": content}],  # type: ignore[list-item]
        )


# -- errors a client can act on ----------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_a_first_call_refused_before_anything_was_sent_gets_the_real_status(
    server: FakeServer, endpoint: Endpoint, stream: bool
):
    server.enqueue(Fault.status(429, headers={"retry-after": "3600"}))
    body = {"model": "refine", "messages": [{"role": "user", "content": QUESTION}]}
    if stream:
        status, events, headers = await sse(endpoint, {**body, "stream": True})
    else:
        response = await post(endpoint, body)
        status, events, headers = response.status_code, [response.json()], response.headers
    assert status == 429
    assert headers["retry-after"] == "3600"
    assert events[0]["error"]["type"] == "rate_limit_error"


async def test_the_sdk_raises_a_rate_limit_error_with_its_status_for_a_stream(
    server: FakeServer, endpoint: Endpoint
):
    server.enqueue(Fault.status(429, headers={"retry-after": "3600"}))
    client = endpoint.client.with_options(max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(
            model="single", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
    assert caught.value.status_code == 429


async def test_error_text_has_no_upstream_url_or_cli_hints(server: FakeServer, endpoint: Endpoint):
    server.enqueue(Fault.status(401, {"error": {"message": "Invalid API Key"}}))
    response = await post(
        endpoint, {"model": "single", "messages": [{"role": "user", "content": QUESTION}]}
    )
    message = response.json()["error"]["message"]
    assert response.status_code == 502
    assert "127.0.0.1" not in message and "http" not in message
    assert "--" not in message and "_API_KEY" not in message and "LLAMABERRY_" not in message


async def test_unknown_routes_and_methods_answer_json(endpoint: Endpoint):
    async with httpx.AsyncClient() as http:
        missing = await http.get(endpoint.url + "/nothing-here")
        wrong = await http.get(endpoint.url + "/chat/completions")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and "GET" in wrong.json()["error"]["message"]


async def test_models_refreshes_the_upstream_list(server: FakeServer, endpoint: Endpoint):
    before = {m.id async for m in endpoint.client.models.list()}
    server.models = [*server.models, "new/model-loaded-later"]
    after = {m.id async for m in endpoint.client.models.list()}
    assert "refine/new/model-loaded-later" not in before
    assert "refine/new/model-loaded-later" in after
