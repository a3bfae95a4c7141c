"""The OpenAI-compatible endpoint the LLM stages talk to (vLLM, SGLang, llama.cpp, Ollama,
``transformers serve``). See docs/llm.md."""

import os

import dagster as dg
from pydantic import Field

from refinery.llm.endpoint import DEFAULT_KEY_ENV, LlmEndpoint
from refinery.paths import Layout

BASE_URL_ENV = "REFINERY_LLM_BASE_URL"
MODEL_ENV = "REFINERY_LLM_MODEL"
CACHE_FILE = "cache/llm/requests.sqlite"


def llm_configured() -> bool:
    """Whether an endpoint is set in the environment: the LLM stages follow their upstream
    automatically only then (the demo never runs them otherwise)."""
    return bool(os.environ.get(BASE_URL_ENV))


class LlmResource(dg.ConfigurableResource):
    """Where the LLM is and the client's limits. Hands the library a plain :class:`LlmEndpoint`;
    the API key stays in the environment variable named by ``api_key_env``."""

    base_url: str = Field("", description="e.g. http://127.0.0.1:8000/v1 ('' = not configured).")
    model: str = Field("", description="The model name the server expects (vLLM: --served-model-name).")
    api_key_env: str = Field(DEFAULT_KEY_ENV, description="Environment variable holding the API key, if any.")
    max_concurrency: int = Field(8, ge=1, description="Requests in flight at once, per step.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds to wait for one answer.")
    max_retries: int = Field(4, ge=0, description="Retries on 429, 5xx and connection errors.")
    backoff_s: float = Field(0.5, ge=0, description="First retry wait; doubled each retry (with jitter).")
    cache_path: str = Field(
        "", description=f"SQLite request cache; '' = <home>/{CACHE_FILE}; 'off' disables caching."
    )

    def plain(self) -> LlmEndpoint:
        """The endpoint the library gets (a clear error when none is configured). Its cache path is
        relative to the Refinery home until the stage resolves it with ``LlmEndpoint.under``."""
        return LlmEndpoint(
            base_url=self.base_url,
            model=self.model,
            api_key_env=self.api_key_env,
            max_concurrency=self.max_concurrency,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            backoff_s=self.backoff_s,
            cache_path="" if self.cache_path == "off" else self.cache_path or CACHE_FILE,
        )

    def endpoint(self, layout: Layout) -> LlmEndpoint:
        """The endpoint with its cache under ``layout``'s home."""
        return self.plain().under(layout.home)
