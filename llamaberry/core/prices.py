"""What a run cost in dollars, from genai-prices' table of model prices.

The prices are not ours: `genai-prices` (maintained by the pydantic team) knows each provider's
models, their input, output and cached-input prices, and when those changed. A run is priced call
by call at the time it started, cached prompt tokens at the cached-input price where the table has
one. Where the table does not know the endpoint or the model the answer is `None`, shown as
"unknown price": never a guess.

Which endpoint: a run that names its `base_url` is priced by the provider that URL belongs to (an
OpenAI-compatible client pointed at OpenRouter is priced as OpenRouter), or not at all when the URL
is nobody's in the table (a vLLM or a test server on this machine). Without one, by the provider's
name. The `local` provider (llama.cpp in this process) is never priced: nobody bills its tokens, and
the terminal and the web UI say "free (local model)".

A call made through a provider's Batch API (a run of `eval --batch`, `"batch": true` in its
settings) is priced at the table's Batch API rates where it has them for the model (genai-prices'
`processing: batch` price variant; Groq's gpt-oss models and many of OpenAI's, for one). Where it
has none, the run is priced at list price and says so (`at_list_price`): the provider bills less
than that, and we put no discount of our own making in its place. The run records which
(`Run.list_price`), and wherever a saved run's cost is shown (the terminal, `history show`,
`history export`, the web UI) it is shown by `run_cost_text`: "$0.0012 (Batch API)" at its
rates, "$0.0024 at list price (the Batch API bills less)" without them.

genai-prices is imported on the first run that needs a price (it and its table take about a
second to load on a busy machine), so a run on the local model, and `import llamaberry`, never pay
for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING

from llamaberry.core.providers import PROVIDERS, ROWS
from llamaberry.core.results import Usage

if TYPE_CHECKING:
    from llamaberry.core.results import Run

# The providers someone bills (their rows say so), which genai-prices knows by the same id;
# `local` is not billed.
PRICED_PROVIDERS = frozenset(row.name for row in ROWS if row.billed)
UNKNOWN = "unknown price"
FREE = "free (local model)"
# genai-prices' price context for a call through a Batch API (its price variants' `when`).
BATCH_CONTEXT = MappingProxyType({"processing": "batch"})
# Said after a cost where a Batch API run was priced at list price.
AT_LIST_PRICE = "at list price"
# After a saved Batch API run's cost (`run_cost_text`): at its rates, or at list price.
BATCH_RATES = "(Batch API)"
LIST_PRICE_NOTE = f"{AT_LIST_PRICE} (the Batch API bills less)"
# Said once, where such costs are shown.
BILLS_LESS = (
    "Costs of the Batch API runs are at list price: genai-prices has no Batch API rate for "
    "{model}, and the Batch API bills less."
)


def price(
    usage: Usage,
    provider: str,
    model: str,
    *,
    base_url: str | None = None,
    when: datetime | None = None,
    batch: bool = False,
) -> float | None:
    """The dollars `usage` cost on `provider`'s `model` (at `when`), or None when unknown;
    with `batch`, at the table's Batch API rate where it has one, else at list price."""
    if provider not in PRICED_PROVIDERS or not model:
        return None
    from genai_prices import Usage as PriceUsage
    from genai_prices import calc_price

    prompt = max(usage.prompt_tokens, 0)
    counts = PriceUsage(
        input_tokens=prompt,
        cache_read_tokens=min(max(usage.cached_tokens, 0), prompt),
        output_tokens=max(usage.completion_tokens, 0),
    )
    context = BATCH_CONTEXT if batch else None
    try:
        if base_url:
            calc = calc_price(
                counts,
                model,
                provider_api_url=base_url,
                genai_request_timestamp=when,
                price_context=context,
            )
        else:
            calc = calc_price(
                counts,
                model,
                provider_id=provider,
                genai_request_timestamp=when,
                price_context=context,
            )
    except (LookupError, ValueError):
        return None
    return float(calc.total_price)


def price_calls(
    usages: Iterable[Usage],
    provider: str,
    model: str,
    *,
    base_url: str | None = None,
    when: datetime | None = None,
    batch: bool = False,
) -> float | None:
    """The summed price of several calls, each priced alone; None when any is unknown.

    Each call alone, since some prices depend on the size of one request (a long-context tier).
    """
    total = 0.0
    for usage in usages:
        one = price(usage, provider, model, base_url=base_url, when=when, batch=batch)
        if one is None:
            return None
        total += one
    return total


def run_cost(run: Run, *, batch: bool | None = None) -> float | None:
    """What `run` cost in dollars, or None when its price is unknown (or it ran locally); a
    run through a Batch API at its rates where the table has them (else see `at_list_price`).
    `batch=False` prices it at list price whatever it went through."""
    return price_calls(
        _usages(run),
        run.provider,
        run.model,
        base_url=_base_url(run),
        when=run.started_at,
        batch=is_batch(run) if batch is None else batch,
    )


def price_run(run: Run) -> None:
    """Set `run.cost` as it ends, and for a run through a Batch API whether that cost is at
    list price (`Run.list_price`), so what it is shown as later does not hang on the table
    of the day."""
    run.cost = run_cost(run)
    run.list_price = at_list_price(run) if is_batch(run) and run.cost is not None else None


def is_batch(run: Run) -> bool:
    """Whether `run` went through a Batch API (a run of `eval --batch`)."""
    return bool(run.settings.get("batch"))


def priced_at_list(run: Run) -> bool:
    """Whether a saved run's known cost is a Batch API run's at list price: what it recorded
    when it was priced; for one saved before that was recorded, whether its cost is what list
    price comes to (those priced before batch rates were used all are)."""
    if not is_batch(run) or run.cost is None:
        return False
    if run.list_price is not None:
        return run.list_price
    listed = run_cost(run, batch=False)
    return listed is not None and math.isclose(listed, run.cost, rel_tol=1e-9)


def with_list_price(run: Run) -> Run:
    """`run` as its JSON is written (`history show --json`, `history export`, the web UI's
    download): a Batch API run saved before `list_price` was recorded gets it said."""
    if run.list_price is not None or not is_batch(run) or run.cost is None:
        return run
    return run.model_copy(update={"list_price": priced_at_list(run)})


def run_cost_text(run: Run) -> str:
    """A saved run's cost as every surface shows it: '$0.0012', 'unknown price', 'free
    (local model)'; a Batch API run's '$0.0012 (Batch API)' at its rates, '$0.0024 at list
    price (the Batch API bills less)' where the table has none for its model."""
    text = cost_text(run.cost, run.provider)
    if run.cost is None or not is_batch(run):
        return text
    return f"{text} {LIST_PRICE_NOTE if priced_at_list(run) else BATCH_RATES}"


def at_list_price(run: Run) -> bool:
    """Whether `run` went through a Batch API and is priced at list price, since the table has
    no Batch API rate for its model: the provider bills less than its cost says. (A million
    tokens in and out priced the same through it as at list price; False when unpriced.)"""
    if not is_batch(run) or run.provider not in PRICED_PROVIDERS:
        return False
    sample = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    base_url, when = _base_url(run), run.started_at
    listed = price(sample, run.provider, run.model, base_url=base_url, when=when)
    batched = price(sample, run.provider, run.model, base_url=base_url, when=when, batch=True)
    return listed is not None and batched == listed


def _usages(run: Run) -> list[Usage]:
    return [call.usage for call in run.calls] or [run.usage]


def _base_url(run: Run) -> str | None:
    base_url = run.settings.get("base_url")
    return base_url if isinstance(base_url, str) else None


def dollars(cost: float) -> str:
    """A cost as a person reads it: '$0.0012', '$0.000058', '$1.23' (two significant digits
    below a cent)."""
    if cost <= 0:
        return "$0"
    places = max(2, 1 - math.floor(math.log10(cost)))
    return f"${cost:.{places}f}"


def cost_text(cost: float | None, provider: str) -> str:
    """'$0.0012', 'unknown price', or 'free (local model)' for the local provider."""
    if cost is not None:
        return dollars(cost)
    row = PROVIDERS.get(provider)
    return FREE if row is not None and not row.billed else UNKNOWN
