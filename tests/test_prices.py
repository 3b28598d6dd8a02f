"""A run's cost in dollars: from genai-prices' table, cached input at its own price, never a guess."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from llamaberry.core.prices import (
    at_list_price,
    cost_text,
    dollars,
    price,
    price_calls,
    price_run,
    run_cost,
    run_cost_text,
)
from llamaberry.core.results import Call, Message, Run, Usage
from llamaberry.eval import build_report
from llamaberry.eval.results import ItemResult
from llamaberry.eval.run import price_summaries
from llamaberry.store import Store, export_jsonl

WHEN = datetime(2026, 6, 1, tzinfo=UTC)


def usage(prompt: int, cached: int = 0, completion: int = 100) -> Usage:
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=cached,
    )


def test_a_known_groq_model_is_priced_by_its_input_and_output_tokens():
    cost = price(usage(1_000_000, completion=0), "groq", "llama-3.1-8b-instant", when=WHEN)
    more = price(usage(1_000_000, completion=1_000_000), "groq", "llama-3.1-8b-instant", when=WHEN)
    assert cost is not None and more is not None
    assert 0 < cost < more


def test_cached_input_costs_less_where_the_table_has_a_cached_price():
    # Groq bills gpt-oss-120b's cached input at half price, and the table says so.
    fresh = price(usage(10_000), "groq", "openai/gpt-oss-120b", when=WHEN)
    cached = price(usage(10_000, cached=8_000), "groq", "openai/gpt-oss-120b", when=WHEN)
    assert fresh is not None and cached is not None
    assert cached < fresh


def test_a_model_or_endpoint_the_table_does_not_know_is_unknown_not_guessed():
    assert price(usage(1000), "groq", "no-such-model-anywhere", when=WHEN) is None
    # An OpenAI-compatible server on this machine is nobody's in the table, whatever model it names.
    local_url = "http://127.0.0.1:8080/v1"
    assert price(usage(1000), "openai", "gpt-4o-mini", base_url=local_url, when=WHEN) is None


def test_the_local_model_is_never_priced():
    assert price(usage(1000), "local", "SmolLM2-135M-Instruct", when=WHEN) is None
    assert cost_text(None, "local") == "free (local model)"
    assert cost_text(None, "groq") == "unknown price"


def test_a_base_url_is_priced_as_the_provider_it_belongs_to():
    by_name = price(usage(5000), "groq", "llama-3.3-70b-versatile", when=WHEN)
    by_url = price(
        usage(5000),
        "openai",  # an OpenAI-compatible client pointed at Groq
        "llama-3.3-70b-versatile",
        base_url="https://api.groq.com/openai/v1",
        when=WHEN,
    )
    assert by_name is not None and by_name == by_url


def test_a_run_is_priced_call_by_call_and_unknown_if_any_call_is():
    calls = [usage(3000, cached=2000), usage(1000)]
    each = [price(u, "groq", "openai/gpt-oss-120b", when=WHEN) for u in calls]
    total = price_calls(calls, "groq", "openai/gpt-oss-120b", when=WHEN)
    assert total is not None and None not in each
    assert abs(total - sum(c for c in each if c is not None)) < 1e-12
    run = Run(mode="refine", model="openai/gpt-oss-120b", provider="groq", question="q")
    run.started_at = WHEN
    run.calls = [
        Call(kind="turn", index=i, messages=[Message(role="user", content="q")], usage=u)
        for i, u in enumerate(calls, 1)
    ]
    assert run_cost(run) == total
    run.model = "no-such-model-anywhere"
    assert run_cost(run) is None


# After genai-prices' Batch API rates for Groq's gpt-oss models start (2026-10-14).
BATCH_WHEN = datetime(2026, 11, 1, tzinfo=UTC)


def _batch_run(model: str, **settings: object) -> Run:
    run = Run(mode="single", model=model, provider="groq", question="q")
    run.started_at = BATCH_WHEN
    run.settings = {"batch": True, **settings}
    run.calls = [
        Call(kind="answer", index=1, messages=[Message(role="user", content="q")], usage=u)
        for u in (usage(3000), usage(1000))
    ]
    return run


def test_a_batch_run_is_priced_at_the_tables_batch_rates_or_said_to_be_at_list_price():
    # genai-prices holds Groq's Batch API rates for gpt-oss-120b (half price): they are used.
    with_rates = _batch_run("openai/gpt-oss-120b")
    calls = [usage(3000), usage(1000)]
    listed = price_calls(calls, "groq", "openai/gpt-oss-120b", when=BATCH_WHEN)
    cost = run_cost(with_rates)
    assert cost is not None and listed is not None and 0 < cost < listed
    assert not at_list_price(with_rates)
    # Before the table has them, at list price, and said so.
    with_rates.started_at = WHEN
    assert at_list_price(with_rates)
    assert run_cost(with_rates) == price_calls(calls, "groq", "openai/gpt-oss-120b", when=WHEN)
    # None for llama-3.1-8b-instant: list price, and the run says so.
    without = _batch_run("llama-3.1-8b-instant")
    listed = price_calls(calls, "groq", "llama-3.1-8b-instant", when=BATCH_WHEN)
    assert run_cost(without) == listed and listed is not None
    assert at_list_price(without)
    # Not through a Batch API, or not priced at all: nothing to say.
    without.settings["batch"] = False
    assert not at_list_price(without)
    assert not at_list_price(_batch_run("llama-3.1-8b-instant", base_url="http://127.0.0.1:9/v1"))


def test_a_batch_run_records_whether_its_cost_is_at_list_price_and_says_so():
    with_rates, without = _batch_run("openai/gpt-oss-120b"), _batch_run("llama-3.1-8b-instant")
    plain = _batch_run("llama-3.1-8b-instant")
    plain.settings = {}
    unpriced = _batch_run("llama-3.1-8b-instant", base_url="http://127.0.0.1:9/v1")
    for run in (with_rates, without, plain, unpriced):
        price_run(run)
    assert (with_rates.list_price, without.list_price) == (False, True)
    assert plain.list_price is None and unpriced.list_price is None
    assert with_rates.cost and without.cost and plain.cost
    assert run_cost_text(with_rates) == f"{dollars(with_rates.cost)} (Batch API)"
    assert run_cost_text(without) == (
        f"{dollars(without.cost)} at list price (the Batch API bills less)"
    )
    assert run_cost_text(plain) == dollars(plain.cost) == cost_text(plain.cost, "groq")
    assert run_cost_text(unpriced) == "unknown price"
    # What it recorded holds, whatever the table says today.
    with_rates.list_price = True
    assert run_cost_text(with_rates).endswith(" at list price (the Batch API bills less)")


def test_a_batch_run_saved_before_list_price_was_recorded_is_told_by_its_cost(tmp_path: Path):
    # Batch runs priced before batch rates were used are all at list price; those priced at
    # them since (before the run recorded which) are not. Their saved cost tells which.
    at_list, at_rates = _batch_run("openai/gpt-oss-120b"), _batch_run("openai/gpt-oss-120b")
    at_list.cost, at_rates.cost = run_cost(at_list, batch=False), run_cost(at_rates)
    assert at_list.cost and at_rates.cost and at_rates.cost < at_list.cost
    store = Store(tmp_path / "h.db")
    store.save(at_list)
    store.save(at_rates)
    saved = {run.id: run for run in store.runs()}
    assert saved[at_list.id].list_price is None and saved[at_rates.id].list_price is None
    assert run_cost_text(saved[at_list.id]) == (
        f"{dollars(at_list.cost)} at list price (the Batch API bills less)"
    )
    assert run_cost_text(saved[at_rates.id]) == f"{dollars(at_rates.cost)} (Batch API)"
    exported = {d["id"]: d for d in map(json.loads, export_jsonl(store.runs()))}
    assert exported[at_list.id]["list_price"] is True
    assert exported[at_rates.id]["list_price"] is False
    store.close()


def test_dollars_show_two_significant_digits_below_a_cent():
    assert dollars(0.0012) == "$0.0012"
    assert dollars(0.000058) == "$0.000058"
    assert dollars(0.031) == "$0.031"
    assert dollars(1.234) == "$1.23"
    assert dollars(0) == "$0"


def test_importing_the_package_and_the_price_module_does_not_load_the_price_table():
    code = "import sys, llamaberry, llamaberry.core.prices\nprint('genai_prices' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _item(mode: str, item: int, cost: float | None, list_price: bool = False) -> ItemResult:
    return ItemResult(
        item=item,
        mode=mode,
        question="q",
        gold="3",
        scorer="number",
        status="ok",
        correct=True,
        predicted="3",
        answer="3",
        error=None,
        tokens=100,
        cost=cost,
        list_price=list_price,
        seconds=1.0,
        run_id=None,
        reused=False,
    )


def test_each_eval_mode_s_cost_per_item_is_given_beside_single_s():
    results = [_item("single", i, 0.0005) for i in (1, 2)]
    results += [_item("refine", i, 0.0031) for i in (1, 2)]
    results += [_item("steps", 1, 0.002), _item("steps", 2, None)]
    report = build_report("d", "m", ["single", "refine", "steps"], results)
    price_summaries(report.summaries, "groq")
    cost = {s.mode: s.cost for s in report.summaries}
    assert cost["single"] == "$0.00050"
    assert cost["refine"] == "$0.0031, 6.2x single"
    # One item of unknown price makes the mode's price unknown, never a partial sum.
    assert cost["steps"] == "unknown price"
    price_summaries(report.summaries, "local")
    assert {s.cost for s in report.summaries} >= {"free (local model)"}


def test_a_mode_whose_batch_runs_are_at_list_price_says_so_in_its_cost():
    results = [_item("single", i, 0.0005, list_price=True) for i in (1, 2)]
    results += [_item("refine", i, 0.0031, list_price=True) for i in (1, 2)]
    report = build_report("d", "m", ["single", "refine"], results)
    price_summaries(report.summaries, "groq")
    cost = {s.mode: s.cost for s in report.summaries}
    assert cost == {
        "single": "$0.00050 at list price",
        "refine": "$0.0031 at list price, 6.2x single",
    }
