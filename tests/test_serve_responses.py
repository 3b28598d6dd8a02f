"""`llamaberry serve`'s Responses API: the real `openai` SDK's `client.responses` talks to our
endpoint, which runs modes on a fake upstream, over real sockets."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from openai.types.responses import ResponseOutputMessage, ResponseReasoningItem

from llamaberry.store import Store
from llamaberry.testing import FakeServer, Fault, RecordedRequest, Reply

from .conftest import FIRST_TURN, refine_script
from .test_serve import QUESTION, Endpoint, expected_usage, start_endpoint, words
from .test_serve_hardening import raw

HEADINGS = ["### Turn 1", "### Turn 2", "### Turn 3", "### Synthesis"]


@pytest.fixture
async def endpoint(server: FakeServer):
    async for running in start_endpoint(server):
        yield running


def replies_of(server: FakeServer) -> list[str]:
    """What the fake upstream answered each call, as refine_script would have."""
    return [refine_script(request) for request in server.requests]


def upstream_text(request: RecordedRequest) -> str:
    return "\n".join(str(message.get("content") or "") for message in request.messages)


async def stream_events(client: openai.AsyncOpenAI, **request: object):
    """Stream a response with the SDK's helper; return its events and the final response."""
    async with client.responses.stream(**request) as stream:  # type: ignore[arg-type]
        events = [event async for event in stream]
        final = await stream.get_final_response()
    return events, final


# -- output items, usage ----------------------------------------------------------------------


async def test_refine_answers_with_a_reasoning_item_then_a_message_and_usage_over_every_call(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(refine_script)
    response = await endpoint.client.responses.create(model="refine", input=QUESTION)

    reasoning, message = response.output
    assert isinstance(reasoning, ResponseReasoningItem)
    assert isinstance(message, ResponseOutputMessage)
    # one summary part per call, each under its heading
    assert [part.text.split("\n")[0] for part in reasoning.summary] == HEADINGS
    assert "Spell the word" in reasoning.summary[0].text
    assert response.output_text.startswith('The word "strawberry" contains the letter r')
    assert response.status == "completed"
    assert response.id.startswith("resp_")

    prompt, completion = expected_usage(server, replies_of(server))
    assert len(server.requests) == 4
    assert response.usage is not None
    assert response.usage.input_tokens == prompt
    assert response.usage.output_tokens == completion
    assert response.usage.total_tokens == prompt + completion
    # refine's answer is its synthesis's: every token it wrote is intermediate work
    assert response.usage.output_tokens_details.reasoning_tokens == completion


async def test_a_streamed_refine_sends_the_documented_events_in_order(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(refine_script)
    events, final = await stream_events(endpoint.client, model="refine", input=QUESTION)

    kinds = [event.type for event in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
    ]
    assert kinds[-7:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    # the reasoning streams (many deltas, four parts) and is done before the message begins
    assert kinds.count("response.reasoning_summary_text.delta") > 20
    assert kinds.count("response.reasoning_summary_part.done") == 4
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    done = [e.item.type for e in events if e.type == "response.output_item.done"]
    assert added == done == ["reasoning", "message"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    streamed = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert all(heading in streamed for heading in HEADINGS)

    assert final.output_text.startswith('The word "strawberry"')
    _, completion = expected_usage(server, replies_of(server))
    assert final.usage is not None
    assert final.usage.output_tokens == completion
    assert final.usage.output_tokens_details.reasoning_tokens == completion


async def test_single_streams_its_reply_as_output_text_with_no_reasoning_item(
    server: FakeServer, endpoint: Endpoint
):
    server.enqueue("There are three r's in strawberry.")
    events, final = await stream_events(endpoint.client, model="single", input=QUESTION)

    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1
    assert "".join(deltas) == "There are three r's in strawberry."
    assert [item.type for item in final.output] == ["message"]
    assert final.usage is not None
    assert final.usage.output_tokens == words("There are three r's in strawberry.")
    assert final.usage.output_tokens_details.reasoning_tokens == 0


async def test_a_non_streaming_response_says_the_same_as_the_stream(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(refine_script)
    _, streamed = await stream_events(endpoint.client, model="refine", input=QUESTION)
    whole = await endpoint.client.responses.create(model="refine", input=QUESTION)
    assert [p.text for p in whole.output[0].summary] == [  # type: ignore[union-attr]
        p.text
        for p in streamed.output[0].summary  # type: ignore[union-attr]
    ]
    assert whole.output_text == streamed.output_text


# -- the conversation -------------------------------------------------------------------------


async def test_instructions_and_input_items_reach_upstream_but_reasoning_items_never_do(
    server: FakeServer, endpoint: Endpoint
):
    server.enqueue("Three.")
    await endpoint.client.responses.create(
        model="single",
        instructions="Answer in one word.",
        input=[
            {"role": "user", "content": "Spell strawberry."},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "SECRET-WORK"}],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "s-t-r-a-w-b-e-r-r-y"}],
            },
            {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
        ],
    )
    sent = upstream_text(server.requests[0])
    assert "Answer in one word." in sent
    assert "Spell strawberry." in sent and "s-t-r-a-w-b-e-r-r-y" in sent and QUESTION in sent
    assert "SECRET-WORK" not in sent


async def test_previous_response_id_continues_the_conversation(
    server: FakeServer, endpoint: Endpoint
):
    server.enqueue("There are three r's in strawberry.", "Raspberry has three too.")
    first = await endpoint.client.responses.create(
        model="single", input=QUESTION, instructions="Be brief."
    )
    second = await endpoint.client.responses.create(
        model="single", input="And in raspberry?", previous_response_id=first.id
    )
    sent = upstream_text(server.requests[1])
    assert QUESTION in sent
    assert "There are three r's in strawberry." in sent
    assert "And in raspberry?" in sent
    assert "Be brief." not in sent  # instructions are not carried over, as OpenAI documents
    assert second.previous_response_id == first.id

    # and a third turn carries both earlier exchanges
    server.enqueue("Blueberry has two.")
    await endpoint.client.responses.create(
        model="single", input="And blueberry?", previous_response_id=second.id
    )
    sent = upstream_text(server.requests[2])
    assert QUESTION in sent and "Raspberry has three too." in sent and "And blueberry?" in sent


async def test_an_unknown_previous_response_id_is_a_404_and_nothing_goes_upstream(
    server: FakeServer, endpoint: Endpoint
):
    with pytest.raises(openai.NotFoundError, match="resp_nope"):
        await endpoint.client.responses.create(
            model="single", input=QUESTION, previous_response_id="resp_nope"
        )
    assert server.requests == []


# -- store and GET ----------------------------------------------------------------------------


async def test_a_stored_response_is_a_run_in_the_history_and_get_returns_it(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(refine_script)
    _, made = await stream_events(endpoint.client, model="refine", input=QUESTION)

    fetched = await endpoint.client.responses.retrieve(made.id)
    assert fetched.id == made.id
    assert fetched.output_text == made.output_text
    assert [item.type for item in fetched.output] == ["reasoning", "message"]
    for _ in range(100):  # the run is written by the store's own thread
        if any(run.id == made.id.removeprefix("resp_") for run in Store().list_runs()):
            break
        await asyncio.sleep(0.05)
    run = Store().get(made.id.removeprefix("resp_"))
    assert run.mode == "refine" and run.question == QUESTION


async def test_get_of_an_unknown_id_is_a_404_in_openai_s_error_shape(endpoint: Endpoint):
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{endpoint.url}/responses/resp_nothing")
    assert response.status_code == 404
    error = response.json()["error"]
    assert "resp_nothing" in error["message"] and error["type"] == "invalid_request_error"


async def test_store_false_keeps_the_response_and_its_run_out_of_the_history(
    server: FakeServer, endpoint: Endpoint
):
    server.enqueue("Three.", "Kept.")
    hidden = await endpoint.client.responses.create(model="single", input=QUESTION, store=False)
    kept = await endpoint.client.responses.create(model="single", input=QUESTION)
    await endpoint.client.responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError):
        await endpoint.client.responses.retrieve(hidden.id)
    for _ in range(100):
        ids = [run.id for run in Store().list_runs()]
        if kept.id.removeprefix("resp_") in ids:
            break
        await asyncio.sleep(0.05)
    assert hidden.id.removeprefix("resp_") not in ids


async def test_with_the_history_off_responses_are_kept_in_memory(server: FakeServer):
    server.enqueue("Three.", "Same again.")
    async for endpoint in start_endpoint(server):
        endpoint.gateway.history = False
        first = await endpoint.client.responses.create(model="single", input=QUESTION)
        await endpoint.client.responses.create(
            model="single", input="Again?", previous_response_id=first.id
        )
    assert "Three." in upstream_text(server.requests[1])
    assert Store().count() == 0


# -- errors -----------------------------------------------------------------------------------


async def test_a_rate_limit_before_anything_was_sent_is_a_429_streamed_or_not(
    server: FakeServer, endpoint: Endpoint
):
    for stream in (False, True):
        server.enqueue(Fault.status(429, headers={"retry-after": "3600"}))
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{endpoint.url}/responses",
                json={"model": "refine", "input": QUESTION, "stream": stream},
            )
        assert response.status_code == 429, stream
        assert response.headers["retry-after"] == "3600"
        assert response.json()["error"]["type"] == "rate_limit_error"


async def test_an_error_after_streaming_began_ends_with_response_failed(
    server: FakeServer, endpoint: Endpoint
):
    server.enqueue(FIRST_TURN, Fault.status(400, {"error": {"message": "bad turn two"}}))
    kinds: list[str] = []
    failed = None
    stream = await endpoint.client.responses.create(model="refine", input=QUESTION, stream=True)
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.failed":
            failed = event.response
    assert "response.reasoning_summary_text.delta" in kinds
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    assert failed is not None and failed.status == "failed"
    assert failed.error is not None and "bad turn two" in failed.error.message


async def test_bad_requests_are_400s_in_openai_s_error_shape(
    server: FakeServer, endpoint: Endpoint
):
    # An unknown model is 404 model_not_found on every route, as OpenAI answers it.
    with pytest.raises(openai.NotFoundError, match="refine"):
        await endpoint.client.responses.create(model="gpt-4o", input=QUESTION)
    with pytest.raises(openai.BadRequestError, match="no option colour"):
        await endpoint.client.responses.create(
            model="refine", input=QUESTION, extra_body={"colour": "red"}
        )
    with pytest.raises(openai.BadRequestError, match="input_image"):
        await endpoint.client.responses.create(
            model="single",
            input=[
                {"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y"}]}
            ],
        )
    with pytest.raises(openai.BadRequestError, match="function tools"):
        await endpoint.client.responses.create(
            model="single", input=QUESTION, tools=[{"type": "web_search"}]
        )
    assert server.requests == []


async def test_mode_options_come_from_the_extra_body(server: FakeServer, endpoint: Endpoint):
    server.reply_with(refine_script)
    response = await endpoint.client.responses.create(
        model="refine", input=QUESTION, extra_body={"turns": 2}
    )
    assert len(server.requests) == 3
    assert [p.text.split("\n")[0] for p in response.output[0].summary] == [  # type: ignore[union-attr]
        "### Turn 1",
        "### Turn 2",
        "### Synthesis",
    ]


async def test_max_output_tokens_and_temperature_reach_upstream(
    server: FakeServer, endpoint: Endpoint
):
    server.enqueue("Three.")
    await endpoint.client.responses.create(
        model="single", input=QUESTION, max_output_tokens=77, temperature=0.3
    )
    body = server.requests[0].body
    assert body["temperature"] == 0.3
    assert 77 in (body.get("max_tokens"), body.get("max_completion_tokens"))


async def test_the_upstream_key_is_never_returned(server: FakeServer, endpoint: Endpoint):
    server.enqueue(
        Fault.status(400, {"error": {"message": "Invalid API Key provided: upstream-secret"}})
    )
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{endpoint.url}/responses", json={"model": "single", "input": QUESTION}
        )
    assert response.status_code >= 400
    assert "upstream-secret" not in response.text


async def test_with_a_key_set_a_request_without_it_gets_401(server: FakeServer):
    async for endpoint in start_endpoint(server, api_key="serve-key"):
        stranger = openai.AsyncOpenAI(base_url=endpoint.url, api_key="wrong")
        with pytest.raises(openai.AuthenticationError):
            await stranger.responses.create(model="single", input=QUESTION)
        with pytest.raises(openai.AuthenticationError):
            await stranger.responses.retrieve("resp_x")
        await stranger.close()
    assert server.requests == []


async def test_a_client_that_closes_the_stream_during_turn_one_stops_the_run(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(lambda request: Reply(FIRST_TURN, chunk_delay=0.05))
    stream = await endpoint.client.responses.create(model="refine", input=QUESTION, stream=True)
    async for event in stream:
        if event.type == "response.reasoning_summary_text.delta" and "Spell" in event.delta:
            break
    await stream.close()
    for _ in range(100):  # wait for the server to notice and settle the run
        runs = list(Store().runs())
        if runs and runs[0].status != "running":
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # time in which turn 2 would have been sent
    assert len(server.requests) == 1
    assert runs[0].status == "cancelled"


async def test_events_are_server_sent_events_named_by_their_type(
    server: FakeServer, endpoint: Endpoint
):
    server.enqueue("Three.")
    async with (
        httpx.AsyncClient() as http,
        http.stream(
            "POST",
            f"{endpoint.url}/responses",
            json={"model": "single", "input": QUESTION, "stream": True},
        ) as response,
    ):
        text = (await response.aread()).decode()
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [block for block in text.split("\n\n") if block.strip()]
    for block in blocks:
        name, data = block.split("\n")
        assert name.removeprefix("event: ") == json.loads(data.removeprefix("data: "))["type"]


# -- structured output and tools --------------------------------------------------------------

COUNT_SCHEMA = {
    "type": "object",
    "properties": {"count": {"type": "integer"}, "letter": {"type": "string"}},
    "required": ["count", "letter"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def final_call_gets(final: Reply | str):
    """A handler: the call that carries a format or tools (the final one) gets `final`, the
    others refine's scripted sections."""

    def handler(request: RecordedRequest) -> str | Reply:
        if request.tools or request.json_mode:
            return final
        return refine_script(request)

    return handler


async def test_text_format_json_schema_gets_json_that_fits_after_the_thinking(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(final_call_gets(Reply('{"count": 3, "letter": "r"}', chunk_words=2)))
    text_format = {
        "format": {"type": "json_schema", "name": "Count", "schema": COUNT_SCHEMA, "strict": True}
    }
    events, final = await stream_events(
        endpoint.client, model="refine", input=QUESTION, text=text_format
    )
    assert json.loads(final.output_text) == {"count": 3, "letter": "r"}
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert [p.text.split("\n")[0] for p in final.output[0].summary] == HEADINGS[:3]  # type: ignore[union-attr]
    # only the final call (the synthesis) carried the schema, and its JSON streamed as the message
    formats = [r.body.get("response_format") for r in server.requests]
    assert formats[:3] == [None, None, None]
    assert formats[3]["json_schema"]["schema"] == COUNT_SCHEMA
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert json.loads("".join(deltas)) == {"count": 3, "letter": "r"}
    whole = await endpoint.client.responses.create(model="refine", input=QUESTION, text=text_format)
    assert json.loads(whole.output_text) == {"count": 3, "letter": "r"}


async def call_the_tool(server: FakeServer, endpoint: Endpoint):
    """single asked with a tool: the model calls it; the response (checked) is returned."""
    call = {"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_7"}
    server.enqueue(Reply("", tool_calls=(call,)), "It is sunny in Paris.")
    asked = "What is the weather in Paris?"
    events, first = await stream_events(
        endpoint.client, model="single", input=asked, tools=[WEATHER_TOOL]
    )
    (function_call,) = [item for item in first.output if item.type == "function_call"]
    assert function_call.name == "get_weather" and function_call.call_id == "call_7"
    assert json.loads(function_call.arguments) == {"city": "Paris"}
    assert "response.function_call_arguments.done" in [e.type for e in events]
    assert server.requests[0].tools == ["get_weather"]
    return first


async def test_a_tool_call_goes_out_as_a_function_call_item(server: FakeServer, endpoint: Endpoint):
    await call_the_tool(server, endpoint)


async def test_a_tool_result_sent_back_by_previous_response_id_reaches_upstream(
    server: FakeServer, endpoint: Endpoint
):
    first = await call_the_tool(server, endpoint)
    asked = "What is the weather in Paris?"
    second = await endpoint.client.responses.create(
        model="single",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": "call_7", "output": "sunny, 24 C"}],
        tools=[WEATHER_TOOL],
    )
    assert second.output_text == "It is sunny in Paris."
    sent = server.requests[1].messages
    assert any(m.get("role") == "tool" and "sunny, 24 C" in str(m.get("content")) for m in sent)
    assert any(
        (m.get("tool_calls") or [{}])[0].get("id") == "call_7"
        for m in sent
        if m["role"] == "assistant"
    )
    assert asked in upstream_text(server.requests[1])


async def test_refine_thinks_then_its_final_call_gets_the_tools(
    server: FakeServer, endpoint: Endpoint
):
    call = {"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_8"}
    server.reply_with(final_call_gets(Reply("", tool_calls=(call,))))
    response = await endpoint.client.responses.create(
        model="refine", input="Weather in Paris?", tools=[WEATHER_TOOL], extra_body={"turns": 2}
    )
    assert [item.type for item in response.output] == ["reasoning", "function_call"]
    assert [bool(r.tools) for r in server.requests] == [False, False, True]


# -- the guards every route has ---------------------------------------------------------------


async def test_the_responses_routes_refuse_other_origins_non_json_and_oversized_bodies(
    server: FakeServer, endpoint: Endpoint
):
    body = {"model": "single", "input": QUESTION}
    async with httpx.AsyncClient() as http:
        other_origin = await http.post(
            f"{endpoint.url}/responses", json=body, headers={"origin": "https://evil.example"}
        )
        reading = await http.get(
            f"{endpoint.url}/responses/resp_x", headers={"origin": "https://evil.example"}
        )
        plain = await http.post(
            f"{endpoint.url}/responses",
            content=json.dumps(body),
            headers={"content-type": "text/plain"},
        )
    port = int(endpoint.url.split(":")[-1].split("/")[0])
    head = "\n".join(
        [
            "POST /v1/responses HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Content-Type: application/json",
            "Content-Length: 300000000",  # refused on the headers alone, never sent
            "Connection: close",
        ]
    )
    huge, _, _ = await raw(port, head + "\n")
    assert other_origin.status_code == 403 and reading.status_code == 403
    assert plain.status_code == 415
    assert huge == 413
    assert server.requests == []


async def test_an_upstream_key_echoed_in_a_reply_is_redacted_streamed_or_not(
    server: FakeServer, endpoint: Endpoint
):
    server.reply_with(lambda request: Reply("The key is upstream-secret, said the model."))
    whole = await endpoint.client.responses.create(model="single", input=QUESTION)
    events, streamed = await stream_events(endpoint.client, model="single", input=QUESTION)
    for response in (whole, streamed):
        assert "upstream-secret" not in repr(response)
        assert "The key is" in response.output_text
    assert not any("upstream-secret" in repr(event) for event in events)
