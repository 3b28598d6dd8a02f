"""The history store: every run saved in SQLite, listed, reopened and exported.

One file per user (`$LLAMABERRY_HOME/history.db`, see `location`). `database` holds the
`Store`: each run kept whole as its pydantic JSON, written off the event loop by the store's
own writer thread, which waits on SQLite's locks instead of the loop. A run is saved when it
starts, after each call and when it ends, so a process that is killed keeps what finished; a
run left "running" by a process that no longer exists reads back as "interrupted". The schema
grows by `migrations`; `export` turns runs back into Markdown and JSONL.
"""

from llamaberry.store.database import INTERRUPTED, RunSummary, Store, StoreError
from llamaberry.store.export import export_jsonl, export_markdown, run_markdown
from llamaberry.store.location import data_dir, default_path, history_enabled

__all__ = [
    "INTERRUPTED",
    "RunSummary",
    "Store",
    "StoreError",
    "data_dir",
    "default_path",
    "export_jsonl",
    "export_markdown",
    "history_enabled",
    "run_markdown",
]
