"""Where the LLM is and how to talk to it: a plain, picklable description of an endpoint.

The resource layer builds one of these from its configuration and hands it to the library, so a
step sent to another process (or a Ray worker) rebuilds the same client from it. The API key is
never stored here: only the *name* of the environment variable that holds it, read when a client
is made.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pydantic import BaseModel, Field

DEFAULT_KEY_ENV = "REFINERY_LLM_API_KEY"


class SamplingParams(BaseModel):
    """The sampling parameters sent with every request of a stage (part of the cache key)."""

    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 decodes greedily (reproducible).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(256, ge=1, description="Completion tokens at most; more ends as too_long.")
    seed: int | None = Field(None, description="Sampling seed, for servers that honour it.")
    stop: list[str] = Field([], description="Stop sequences.")

    def request_fields(self) -> dict:
        """The fields as the OpenAI API names them (unset ones left out)."""
        body: dict = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}
        if self.seed is not None:
            body["seed"] = self.seed
        if self.stop:
            body["stop"] = list(self.stop)
        return body


@dataclass(frozen=True)
class LlmEndpoint:
    """An OpenAI-compatible chat endpoint and the client's limits.

    ``base_url`` ends before ``/chat/completions`` (``http://127.0.0.1:8000/v1``). ``cache_path`` is
    the SQLite file of the request cache ('' disables caching).
    """

    base_url: str
    model: str
    api_key_env: str = DEFAULT_KEY_ENV
    max_concurrency: int = 8
    timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    max_retries: int = 4
    backoff_s: float = 0.5  # first wait; doubled per retry, with jitter, capped by backoff_max_s
    backoff_max_s: float = 30.0
    cache_path: str = ""
    extra_headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.base_url:
            raise ValueError(
                "no LLM endpoint configured: set the llm resource's base_url (or $REFINERY_LLM_BASE_URL) "
                "to an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (see docs/llm.md)"
            )
        if not self.model:
            raise ValueError("the llm resource needs a model name (or $REFINERY_LLM_MODEL)")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {self.max_concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {self.max_retries}")

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def api_key(self) -> str | None:
        """The key from the named environment variable. The default variable may be unset (local
        servers need no key) and ``''`` sends none; a variable the user named is required: unset,
        every request would go out unauthenticated and every row come back a 401, so it is a clear
        error before any request instead."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if key:
            return key
        if self.api_key_env != DEFAULT_KEY_ENV:
            raise ValueError(
                f"the llm resource's api_key_env names ${self.api_key_env}, which is not set (or empty) "
                "where the step runs: export it there, or set api_key_env to '' for a server that "
                "needs no key"
            )
        return None

    def describe(self) -> dict:
        """What provenance records about the endpoint: where and which model, never the key."""
        return {"endpoint": self.base_url, "model": self.model}

    def under(self, home: Path) -> LlmEndpoint:
        """This endpoint with a relative cache path made absolute under ``home``: the resource names
        the cache relative to the Refinery home, which only the running stage knows."""
        if not self.cache_path or Path(self.cache_path).is_absolute():
            return self
        return replace(self, cache_path=str(Path(home) / self.cache_path))

    def to_dict(self) -> dict:
        return asdict(self)
