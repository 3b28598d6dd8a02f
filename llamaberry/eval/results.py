"""What an eval produces: each (item, mode) run scored, the figures over them, and the report
that holds them all."""

from __future__ import annotations

from pydantic import BaseModel

from llamaberry.core.results import Mode
from llamaberry.core.scoring import Scorer


class StageScore(BaseModel):
    """One intermediate answer of a run scored: after turn 2, after the synthesis..."""

    stage: str
    correct: bool
    predicted: str | None


class ItemResult(BaseModel):
    """One item through one mode: the verdict, the answer read, and what it cost; `stages`
    scores every answer the run held on the way (each turn, the synthesis), at no extra call."""

    item: int
    mode: Mode
    question: str
    gold: str
    scorer: Scorer
    status: str
    correct: bool | None
    predicted: str | None
    # The run finished but no answer could be read out of its reply (counted wrong, and apart:
    # the reply's format failed, which says nothing yet about the model's reasoning).
    unreadable: bool = False
    answer: str | None
    error: str | None
    tokens: int
    seconds: float
    # Dollars the run cost by genai-prices' table; None where the price is unknown.
    cost: float | None = None
    # Of the run's prompt tokens, those the server read from its prompt cache.
    cached_tokens: int = 0
    queued_seconds: float = 0.0
    run_id: str | None
    reused: bool
    # True when the run's calls went through the provider's Batch API.
    batch: bool = False
    # True when such a run's `cost` is at list price (genai-prices has no Batch API rate for
    # the model; the provider bills less); a run with one is priced at it.
    list_price: bool = False
    stages: list[StageScore] = []
    # Every answer the run drew side by side (vote's samples, drafts' drafts), scored; the share
    # of them that was right; and the mode's own confidence in its answer (vote's agreement).
    samples: list[StageScore] = []
    sample_accuracy: float | None = None
    confidence: float | None = None


class StageSummary(BaseModel):
    """A mode's accuracy after one stage (turn 1, turn 2, ..., synthesis) over its scored items."""

    mode: Mode
    stage: str
    scored: int
    correct: int
    accuracy: float
    low: float
    high: float


class Flips(BaseModel):
    """How answers changed from one stage to the next, with the item ids of each kind."""

    mode: Mode
    before: str
    after: str
    right_to_wrong: list[int]
    wrong_to_right: list[int]
    wrong_to_other_wrong: list[int]


class SampleSummary(BaseModel):
    """Over a mode's scored items with side-by-side answers (vote's samples, drafts' drafts):
    how often one such answer alone was right (the share right, averaged over items), how often
    any of them was, and how often the mode's own answer (majority, synthesis) was.

    Every interval is over items, not answers: the answers to one question are not independent,
    so counting each as its own trial would overstate how much is known. A share in [0, 1] never
    varies more than a right/wrong mark with the same mean, so this errs on the wide side."""

    mode: Mode
    items: int
    answers: int
    sample_accuracy: float
    sample_low: float
    sample_high: float
    any_right: int
    any_accuracy: float
    any_low: float
    any_high: float
    correct: int
    accuracy: float
    low: float
    high: float


class ConfidenceBucket(BaseModel):
    """A mode's items whose own confidence (vote's agreement) fell in one band, and how often
    its answer was right there: a confidence worth reading rises with accuracy."""

    mode: Mode
    bucket: str
    items: int
    mean_confidence: float
    correct: int
    accuracy: float
    low: float
    high: float


class ModeSummary(BaseModel):
    """A mode's line in the report."""

    mode: Mode
    items: int
    scored: int
    correct: int
    accuracy: float | None
    low: float | None
    high: float | None
    mean_tokens: float | None
    mean_seconds: float | None
    failures: int
    reused: int
    # Finished runs whose reply held no answer the scorer could read (counted wrong).
    unreadable: int = 0
    # Mean dollars per item, and how to show it ('$0.0012', 'unknown price', 'free (local...)').
    mean_cost: float | None = None
    cost: str = "unknown price"
    # Some of its costs are Batch API runs' at list price (then `cost` says so).
    list_price: bool = False
    # Accuracy points gained over the baseline per 1,000 extra tokens per item, on the items
    # both finished, with the interval of the paired difference scaled the same way.
    gain_per_1k_tokens: float | None = None
    gain_low: float | None = None
    gain_high: float | None = None
    gain_items: int = 0


class HeadToHead(BaseModel):
    """Two modes on the items both answered: how many each got right that the other missed,
    the exact McNemar test on those, and what it means in plain words."""

    a: Mode
    b: Mode
    items: int
    a_only: int
    b_only: int
    p_value: float = 1.0
    # Holm-adjusted over every pair of the report (the same as p_value with one pair).
    p_adjusted: float = 1.0
    # a's accuracy minus b's on these items, with its 95% paired interval.
    difference: float = 0.0
    low: float = 0.0
    high: float = 0.0
    # Items in all for an 80% chance of detecting a difference this size (an estimate).
    items_for_power: int | None = None
    verdict: str = ""


class Report(BaseModel):
    """The whole eval: per-item results, per-mode summaries and pairwise differences."""

    dataset: str
    model: str
    modes: list[Mode]
    results: list[ItemResult]
    summaries: list[ModeSummary]
    head_to_head: list[HeadToHead]
    stages: list[StageSummary] = []
    flips: list[Flips] = []
    samples: list[SampleSummary] = []
    confidence: list[ConfidenceBucket] = []
    # Why the eval stopped before sending every item (a long rate-limit reset), if it did.
    stopped: str | None = None
    # How the runs went through the provider's Batch API, when they did (one line).
    batch: str | None = None
    # Items whose saved run was made with other prompts (an older llamaberry's), so they were
    # not reused but run again.
    other_prompts: int = 0
    # Things the reader must know about how it ran: the history was unusable, not saved...
    warnings: list[str] = []
    # What produced it, for someone to run it again: version, provider, model, settings,
    # dataset (path, items, hash), command line, date; in order, as (name, value).
    provenance: list[tuple[str, str]] = []

    @property
    def reused(self) -> int:
        """How many runs were taken from the history instead of being run (made before with the
        same question, mode, settings, options and prompts)."""
        return sum(r.reused for r in self.results)

    @property
    def succeeded(self) -> int:
        """How many runs finished and were scored."""
        return sum(r.correct is not None for r in self.results)
