"""Calls laid out for the servers' prompt caches, and the cached tokens counted.

Each multi-call mode's request begins, byte for byte, with what an earlier call of the run sent
(refine's with the previous call and its reply), so a server that caches prompt prefixes reads
that part back. The fake server reports cached tokens as Groq does (the longest prefix a recent
request shared), the usage carries them per call and per run, and every surface shows them.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from llamaberry import Engine
from llamaberry.cli import cli
from llamaberry.providers.streams import usage_of
from llamaberry.testing import FakeServer, RecordedRequest, Reply

from .conftest import refine_script, said
from .test_serve import start_endpoint

QUESTION = "How many r's are in strawberry?"


def _begins_with(request: RecordedRequest, earlier: list[dict], reply: str | None) -> bool:
    head = [*earlier, {"role": "assistant", "content": reply}] if reply is not None else earlier
    sent = [{"role": m["role"], "content": m["content"]} for m in request.messages]
    return sent[: len(head)] == [{"role": m["role"], "content": m["content"]} for m in head]


async def test_each_refine_call_begins_with_the_previous_call_and_its_reply(server: FakeServer):
    server.reply_with(refine_script)
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        run = await engine.refine(QUESTION, turns=3)
    requests = server.requests
    assert len(requests) == 4
    for before, after, call in zip(requests, requests[1:], run.calls, strict=False):
        assert _begins_with(after, before.messages, call.reply), after.messages
        # Exactly one new instruction after the reply: nothing before it was reworded.
        assert len(after.messages) == len(before.messages) + 2
    # One system prompt for the whole run.
    assert len({r.system for r in requests}) == 1


async def test_refine_run_reads_most_of_its_input_from_groq_s_cache(server: FakeServer):
    server.reply_with(refine_script)
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        run = await engine.refine(QUESTION, turns=3)
    cached = [c.usage.cached_tokens for c in run.calls]
    # The first call has nothing before it; each later one re-reads the whole previous request.
    assert cached[0] == 0 and all(c > 0 for c in cached[1:])
    for before, call in zip(run.calls, run.calls[1:], strict=False):
        assert call.usage.cached_tokens == before.usage.prompt_tokens
    assert run.usage.cached_tokens == sum(cached)
    assert run.usage.cached_tokens / run.usage.prompt_tokens >= 0.6


async def test_refine_s_later_instructions_keep_every_demand(server: FakeServer):
    # Worded short so each call adds few tokens to the conversation, but each says all it did.
    server.reply_with(refine_script)
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        await engine.refine(QUESTION, turns=3)
    first, second, third, synthesis = (" ".join((r.user or "").split()) for r in server.requests)
    assert first == QUESTION
    later = server.requests[0].system or ""
    assert "review your answers and answer again" in later and "final synthesis" in later
    for demand in (
        "Turn 2: review your turns 1 to 1 above",
        "confident ones too",
        "agreement between them proves nothing",
        "re-derive what matters",
        "## Critique",
        "every error, gap, unjustified leap or missed alternative",
        "say what you checked",
        "## New Reasoning",
        "each followed by a line that begins with **Explanation:**",
        "a different method can confirm or refute",
        "## Updated Answer",
        "Change the earlier answer only if your reasoning shows it wrong",
    ):
        assert demand in second, demand
    # Turn 3 points back to turn 2's instruction, which its conversation holds word for word.
    assert second in " ".join(said(server.requests[2]).split())
    for demand in (
        "Turn 3: as in turn 2, review your turns 1 to 2 above",
        "they may hold confident mistakes",
        "agreement proves nothing",
        "re-derive what matters",
        "## Critique, ## New Reasoning, ## Updated Answer",
    ):
        assert demand in third, demand
    for demand in (
        "weigh your 3 reasoning turn(s) above by the strength of their reasoning",
        "not by how many agree",
        "## Analysis of Turns",
        "## Comparison",
        "## Final Reasoning",
        "**Explanation:**",
        "Verify the decisive steps yourself",
        "## Comprehensive Final Answer",
        "## Concise Answer",
        "(a letter, a number, a word)",
    ):
        assert demand in synthesis, demand


async def test_drafts_and_their_synthesis_share_the_system_prompt_and_the_question(
    server: FakeServer,
):
    server.reply_with(
        lambda r: "## Concise Answer\n3" if "<draft" in (r.user or "") else "A draft: 3."
    )
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        await engine.run("drafts", QUESTION, drafts=3)
    *drafts, synthesis = server.requests
    asked = f"<question>\n{QUESTION}\n</question>\n\n"
    for request in [*drafts, synthesis]:
        assert request.messages[0] == drafts[0].messages[0]
        assert (request.user or "").startswith(asked)


async def test_each_step_call_begins_with_the_previous_step_and_its_reply(server: FakeServer):
    def step(request: RecordedRequest) -> str:
        number = sum(1 for m in request.messages if m["role"] == "assistant") + 1
        action = "continue" if number < 3 else "final_answer"
        # Each step says something new: a step that repeats an earlier one ends the chain.
        content = f"Count the letters, pass {number}."
        return json.dumps({"title": f"T{number}", "content": content, "next_action": action})

    server.reply_with(lambda r: step(r) if r.json_mode else "3")
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        run = await engine.steps(QUESTION, min_steps=3, max_steps=5)
    steps = [r for r in server.requests if r.json_mode]
    assert len(steps) == 3
    for before, after, call in zip(steps, steps[1:], run.calls, strict=False):
        assert _begins_with(after, before.messages, call.reply)


async def test_the_steps_final_call_keeps_the_steps_under_a_system_prompt_of_its_own(
    server: FakeServer,
):
    def step(request: RecordedRequest) -> str:
        number = sum(1 for m in request.messages if m["role"] == "assistant") + 1
        action = "continue" if number < 3 else "final_answer"
        content = f"Count the letters, pass {number}."
        return json.dumps({"title": f"T{number}", "content": content, "next_action": action})

    server.reply_with(lambda r: step(r) if r.json_mode else "3")
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        run = await engine.steps(QUESTION, min_steps=3, max_steps=5)
    *steps, final = server.requests
    # The one call that does not extend its predecessor: it swaps the JSON-only system prompt
    # for one that ends the step phase (a final answer in JSON is the failure it avoids; see
    # test_steps' test_the_final_call_asks_for_plain_text_in_the_question_s_format). After
    # that system prompt it is the last step's request and its reply, then its instruction.
    assert final.system != steps[-1].system
    reply = {"role": "assistant", "content": run.calls[2].reply}
    assert final.messages[1:-1] == [*steps[-1].messages[1:], reply]
    assert final.messages[-1]["role"] == "user"
    # So a cache that matches from the start reads none of it back.
    assert run.calls[-1].usage.cached_tokens < 5


async def test_vote_samples_send_the_same_request(server: FakeServer):
    server.reply_with(lambda r: "Answer: 3")
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        run = await engine.run("vote", QUESTION, samples=3)
    first, *rest = server.requests
    assert rest and all(r.messages == first.messages for r in rest)
    # Sent at once, the later ones find the first's prompt in the cache.
    assert sum(c.usage.cached_tokens for c in run.calls) > 0


async def test_a_reflect_closing_call_begins_with_the_chain_s_request(
    server: FakeServer,
):
    cut = Reply("<step>Spell it out.</step><step>Positions 3, 8", finish_reason="length")
    server.enqueue(cut, "<answer>3</answer>")
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        run = await engine.run("reflect", QUESTION)
    first, closing = server.requests
    # The chain's request whole; then the chain so far, as its parsed steps (a step the budget
    # did not allow is left out, so this part is rewritten rather than the raw reply).
    assert _begins_with(closing, first.messages, None)
    assert closing.messages[len(first.messages)]["role"] == "assistant"
    assert run.calls[1].usage.cached_tokens >= run.calls[0].usage.prompt_tokens


def test_cached_tokens_are_read_from_prompt_tokens_details_or_llama_cpp_s_timings():
    groq = {
        "prompt_tokens": 100,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 60},
    }
    assert usage_of(groq, "", 0).cached_tokens == 60
    llamacpp = {"prompt_tokens": 100, "completion_tokens": 5}
    assert usage_of(llamacpp, "", 0, {"cache_n": 70, "prompt_n": 30}).cached_tokens == 70
    # Absent, null or nonsense is 0, and never more than the prompt.
    assert usage_of({"prompt_tokens": 10, "prompt_tokens_details": None}, "", 0).cached_tokens == 0
    odd = {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}}
    assert usage_of(odd, "", 0).cached_tokens == 10


def test_the_terminal_and_json_show_cached_tokens_and_the_cost(fake_server: FakeServer):
    fake_server.reply_with(refine_script)
    env = {"GROQ_API_KEY": "test-key", "GROQ_BASE_URL": fake_server.groq_base_url}
    shown = CliRunner().invoke(cli, ["ask", QUESTION, "--turns", "2"], env=env)
    assert shown.exit_code == 0, shown.output
    summary = [line for line in shown.output.splitlines() if "calls ·" in line][-1]
    assert " cached, " in summary
    # The fake server's URL is nobody's in the price table: said, never guessed.
    assert summary.rstrip().endswith("unknown price")
    fake_server.reset()
    fake_server.reply_with(refine_script)
    data = json.loads(CliRunner().invoke(cli, ["ask", QUESTION, "--json"], env=env).stdout)
    assert data["usage"]["cached_tokens"] > 0 and data["cost"] is None


async def test_serve_reports_the_run_s_cached_tokens(server: FakeServer):
    server.reply_with(refine_script)
    async for endpoint in start_endpoint(server):
        reply = await endpoint.client.chat.completions.create(
            model="refine", messages=[{"role": "user", "content": QUESTION}]
        )
    assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
    cached = reply.usage.prompt_tokens_details.cached_tokens
    assert cached is not None and 0 < cached < reply.usage.prompt_tokens


async def test_eval_keeps_each_run_s_cached_tokens(server: FakeServer, tmp_path):
    from llamaberry.eval import evaluate, load_dataset

    server.reply_with(refine_script)
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"question": QUESTION, "answer": "3"}) + "\n")
    async with Engine(api_key="k", base_url=server.groq_base_url, history=False) as engine:
        report = await evaluate(engine, load_dataset(path), ("refine",))
    [result] = report.results
    assert result.cached_tokens > 0 and result.cost is None
    assert report.summaries[0].cost == "unknown price"
