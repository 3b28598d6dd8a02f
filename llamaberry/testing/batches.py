"""The fake server's Batch API: `/files` and `/batches`, as Groq and OpenAI share them.

A JSONL file of requests is uploaded to `/files` (multipart, purpose `batch`); a batch made from
it at `/batches` is "validating", then "in_progress" for `delay` seconds, then "completed" with
an output file of responses (each answered by the server's own chat logic: scripted replies,
the echo fallback) and, where lines failed, an error file. Faults a test can ask for:

- `fail_lines`: the custom_ids whose lines fail (answered in the error file with a 500).
- `expire_lines`: the custom_ids left unanswered, as when a batch's window ends ("expired").
- `reject`: validation errors (each `{"line", "message", "code"}`) that fail the next batch as
  a whole, before any line runs.

Everything the server holds is in memory and lives as long as the server.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

# Where the batch endpoints live: Groq under /openai/v1, everyone else under /v1.
_PREFIXES = ("/openai/v1", "/v1")


@dataclass
class StoredFile:
    id: str
    purpose: str
    filename: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
        }


@dataclass
class StoredBatch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    status: str = "validating"
    created_at: int = field(default_factory=lambda: int(time.time()))
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    total: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] | None = None

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "created_at": self.created_at,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "metadata": self.metadata,
        }


# Answers one request body as the chat endpoint would: (HTTP status, response body).
LineAnswer = Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]


class BatchDesk:
    """The files and batches of one fake server."""

    def __init__(self, answer: LineAnswer) -> None:
        self._answer = answer
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, StoredBatch] = {}
        # Seconds a batch stays in progress before its output is ready.
        self.delay = 0.0
        self.fail_lines: set[str] = set()
        self.expire_lines: set[str] = set()
        self.reject: list[dict[str, Any]] = []
        # How many times each custom_id was answered, over every batch.
        self.answered: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def handles(path: str) -> bool:
        return any(
            path.startswith(f"{p}/files") or path.startswith(f"{p}/batches") for p in _PREFIXES
        )

    async def dispatch(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any] | bytes, str]:
        """Answer one request: (status, body, content type)."""
        for prefix in _PREFIXES:
            if path.startswith(prefix + "/"):
                path = path[len(prefix) :]
                break
        parts = [p for p in path.split("?")[0].split("/") if p]
        if parts == ["files"] and method == "POST":
            return self._upload(headers, body)
        if len(parts) == 3 and parts[0] == "files" and parts[2] == "content" and method == "GET":
            stored = self.files.get(parts[1])
            if stored is None:
                return _missing("file", parts[1])
            return 200, stored.content, "application/octet-stream"
        if len(parts) == 2 and parts[0] == "files" and method == "GET":
            stored = self.files.get(parts[1])
            return (
                (200, stored.info(), "application/json") if stored else _missing("file", parts[1])
            )
        if parts == ["batches"] and method == "GET":
            listed = [b.info() for b in self.batches.values()]
            return 200, {"object": "list", "data": listed, "has_more": False}, "application/json"
        if parts == ["batches"] and method == "POST":
            return self._create(body)
        if len(parts) == 2 and parts[0] == "batches" and method == "GET":
            batch = self.batches.get(parts[1])
            return (200, batch.info(), "application/json") if batch else _missing("batch", parts[1])
        if len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel" and method == "POST":
            batch = self.batches.get(parts[1])
            if batch is None:
                return _missing("batch", parts[1])
            if batch.status in ("validating", "in_progress"):
                batch.status = "cancelled"
            return 200, batch.info(), "application/json"
        return (
            404,
            _error(f"Unknown request URL: {method} {path}", "unknown_url"),
            "application/json",
        )

    def _upload(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any], str]:
        kind = headers.get("content-type", "")
        if not kind.startswith("multipart/form-data"):
            return 400, _error("files must be uploaded as multipart/form-data"), "application/json"
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"content-type: {kind}\r\n\r\n".encode() + body
        )
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = bytes(part.get_payload(decode=True) or b"")
            fields[str(name)] = (part.get_filename(), payload)
        if "file" not in fields:
            return 400, _error("a file is required"), "application/json"
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if purpose != "batch":
            return 400, _error(f"purpose must be 'batch', not {purpose!r}"), "application/json"
        stored = StoredFile(
            id=f"file_fake{next(self._ids):06d}",
            purpose=purpose,
            filename=fields["file"][0] or "upload.jsonl",
            content=fields["file"][1],
        )
        self.files[stored.id] = stored
        return 200, stored.info(), "application/json"

    def _create(self, body: bytes) -> tuple[int, dict[str, Any], str]:
        try:
            asked = json.loads(body)
        except ValueError:
            return 400, _error("the body must be JSON"), "application/json"
        source = self.files.get(str(asked.get("input_file_id")))
        if source is None:
            return _missing("file", str(asked.get("input_file_id")))
        batch = StoredBatch(
            id=f"batch_fake{next(self._ids):06d}",
            input_file_id=source.id,
            endpoint=str(asked.get("endpoint")),
            completion_window=str(asked.get("completion_window")),
            metadata=asked.get("metadata"),
        )
        self.batches[batch.id] = batch
        task = asyncio.get_running_loop().create_task(self._work(batch, source.content))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return 200, batch.info(), "application/json"

    async def _work(self, batch: StoredBatch, content: bytes) -> None:
        lines = [json.loads(line) for line in content.splitlines() if line.strip()]
        batch.total = len(lines)
        await asyncio.sleep(0)
        if self.reject:
            batch.errors, self.reject = list(self.reject), []
            batch.status = "failed"
            return
        batch.status = "in_progress"
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        if batch.status == "cancelled":
            return
        outputs: list[bytes] = []
        errors: list[bytes] = []
        expired = False
        for number, line in enumerate(lines, 1):
            custom_id = str(line.get("custom_id"))
            if custom_id in self.expire_lines:
                expired = True
                continue
            self.answered[custom_id] = self.answered.get(custom_id, 0) + 1
            record: dict[str, Any] = {
                "id": f"batch_req_{batch.id}_{number}",
                "custom_id": custom_id,
            }
            if custom_id in self.fail_lines:
                record["response"] = {
                    "status_code": 500,
                    "request_id": f"req_{number}",
                    "body": _error("the fake server was told to fail this line", "server_error"),
                }
                record["error"] = None
                errors.append(json.dumps(record).encode())
                batch.failed += 1
                continue
            status, reply = await self._answer(line.get("body") or {})
            record["response"] = {
                "status_code": status,
                "request_id": f"req_{number}",
                "body": reply,
            }
            record["error"] = None
            (outputs if status == 200 else errors).append(json.dumps(record).encode())
            if status == 200:
                batch.completed += 1
            else:
                batch.failed += 1
        batch.output_file_id = self._store_output(batch, outputs, "output")
        batch.error_file_id = self._store_output(batch, errors, "errors")
        batch.status = "expired" if expired else "completed"

    def _store_output(self, batch: StoredBatch, lines: list[bytes], kind: str) -> str | None:
        if not lines:
            return None
        stored = StoredFile(
            id=f"file_fake{next(self._ids):06d}",
            purpose="batch_output",
            filename=f"{batch.id}_{kind}.jsonl",
            content=b"\n".join(lines) + b"\n",
        )
        self.files[stored.id] = stored
        return stored.id

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _error(message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


def _missing(what: str, ident: str) -> tuple[int, dict[str, Any], str]:
    return 404, _error(f"No such {what}: {ident}", f"{what}_not_found"), "application/json"
