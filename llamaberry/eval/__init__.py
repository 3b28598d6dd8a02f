"""Eval: a dataset of questions with known answers through several modes, scored and costed.

Each (item, mode) pair is one run, saved in the history once when it ends (off the event loop),
tagged with a key made of the question, its occurrence in the dataset, the mode, the mode's
options, every setting that changes the answer (model, provider, endpoint, temperature, token
budget, effort) and the model the endpoint really serves when that is not the asked id
(llama.cpp answers any id with its one model); a rerun of the same eval takes those runs from
the store instead of paying for them again, and re-scores them against the dataset's current
golds. A saved run is reused only when it was made with the mode's prompts as they are now
(`Run.prompt_version`, a fingerprint of them); one made with other prompts, or saved before runs
recorded theirs, is run again, and the report counts those (`Report.other_prompts`). Failed
runs are not reused, so a rerun retries them.

An item's seconds leave out the time its calls waited in the server's queue (reported apart as
`queued_seconds`, where the server says, as llama.cpp does), so modes compare on the time they
took, not on how busy the server was.

The parts: `datasets` (loading), `run` (running and scoring), `resume` (the history's part),
`results` (what an eval produces), `stats` (intervals and tests), `report` and `chart`.
"""

from llamaberry.eval.chart import draw_chart
from llamaberry.eval.datasets import BUILTIN, Dataset, Item, load_dataset, sample
from llamaberry.eval.formats import PRESETS, Fields
from llamaberry.eval.report import build_report, report_markdown, write_results
from llamaberry.eval.results import (
    ConfidenceBucket,
    Flips,
    HeadToHead,
    ItemResult,
    ModeSummary,
    Report,
    SampleSummary,
    StageScore,
    StageSummary,
)
from llamaberry.eval.resume import eval_key
from llamaberry.eval.run import DEFAULT_CONCURRENCY, default_concurrency, evaluate, stage_answers
from llamaberry.eval.stats import (
    CONFIDENCE_BANDS,
    confidence_band,
    items_needed,
    mcnemar,
    wilson,
)

__all__ = [
    "BUILTIN",
    "CONFIDENCE_BANDS",
    "DEFAULT_CONCURRENCY",
    "PRESETS",
    "ConfidenceBucket",
    "Dataset",
    "Fields",
    "Flips",
    "HeadToHead",
    "Item",
    "ItemResult",
    "ModeSummary",
    "Report",
    "SampleSummary",
    "StageScore",
    "StageSummary",
    "build_report",
    "confidence_band",
    "default_concurrency",
    "draw_chart",
    "eval_key",
    "evaluate",
    "items_needed",
    "load_dataset",
    "mcnemar",
    "report_markdown",
    "sample",
    "stage_answers",
    "wilson",
    "write_results",
]
