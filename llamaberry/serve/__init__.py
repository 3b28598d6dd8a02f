"""`llamaberry serve`: every mode as a model behind OpenAI-compatible chat-completions and
Responses APIs.

Any OpenAI client (a chat app, an editor plugin, the `openai` SDK, curl) picks a mode by the
model name: `refine` runs the refine mode on the configured upstream model, and
`refine/openai/gpt-oss-20b` picks the upstream model too. The intermediate work (turns, steps,
drafts, the upstream model's own thinking) goes out as `reasoning_content`, the field chat apps
fold into a "thinking" section, and the final answer as `content`.

The server is a small Starlette app run by uvicorn (both already come with gradio). Every
request is a run on a shared engine, so all of them share one rate limiter, one connection pool
and the history, exactly as runs started from the CLI or the web UI do.

The parts: `schema` (the request, the model name, errors in OpenAI's shape), `gateway` (the
engines), `reply` (a run's events as chunks or one completion), `responses` (the Responses API:
its request as a conversation, a run as output items and typed events, stored responses) and
`app` (routes, `serve`).
"""

from llamaberry.serve.app import create_app, serve
from llamaberry.serve.gateway import Gateway, mode_names, mode_options
from llamaberry.serve.reply import ANSWER_KIND, Reply, SSEResponse, final_text, until_disconnected
from llamaberry.serve.schema import (
    STANDARD_KEYS,
    ChatMessage,
    ChatRequest,
    ReasoningField,
    ServeError,
    conversation_question,
    error_for,
    failed_run_error,
    parse_model,
)

__all__ = [
    "ANSWER_KIND",
    "STANDARD_KEYS",
    "ChatMessage",
    "ChatRequest",
    "Gateway",
    "ReasoningField",
    "Reply",
    "SSEResponse",
    "ServeError",
    "conversation_question",
    "create_app",
    "error_for",
    "failed_run_error",
    "final_text",
    "mode_names",
    "mode_options",
    "parse_model",
    "serve",
    "until_disconnected",
]
