"""Any OpenAI-compatible endpoint (OpenAI itself, vLLM, Ollama, llama.cpp's server, LM Studio),
through `openai.AsyncOpenAI`."""

from __future__ import annotations

from typing import Any

from llamaberry.core.errors import MissingKeyError
from llamaberry.providers.keys import checked_key, find_base_url, find_key
from llamaberry.providers.sdk import SDKClient

# Where the openai SDK sends requests when no base URL is given.
OPENAI_API_URL = "https://api.openai.com/v1"


class OpenAICompatibleClient(SDKClient):
    """Any OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp's server, LM Studio, OpenAI)."""

    provider = "openai"
    key_variable = "OPENAI_API_KEY"
    own_server = True
    _sdk_name = "openai"
    _http_name = "httpx2"

    def __init__(self, *, api_key: str | None, base_url: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        key, source = find_key(api_key, self.key_variable)
        self._base_url = find_base_url(base_url, "OPENAI_BASE_URL")
        # With no base URL the SDK goes to OpenAI's own API, where a keyless request can only
        # be refused; the user almost surely meant a local server and forgot --base-url.
        if self._base_url is None and not key:
            raise MissingKeyError("openai")
        # Local servers usually take no key, but the SDK insists on one: send a placeholder.
        self._api_key = checked_key(key, source) if key else "no-key"

    def _make_sdk(self, connections: int) -> Any:
        import httpx2
        import openai

        return self._build_sdk(openai.AsyncOpenAI, openai.DefaultAioHttpClient, httpx2, connections)

    def _extra_params(self, stream: bool) -> dict[str, Any]:
        return {"stream_options": {"include_usage": True}} if stream else {}
