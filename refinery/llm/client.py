"""A chat client for OpenAI-compatible endpoints: bounded concurrency, timeouts, retries with
exponential backoff, a persistent request cache, and token counts.

Stages hand it a batch of requests at a time (:meth:`ChatClient.complete`); it answers each from
the cache or the server, at most ``max_concurrency`` in flight, and returns one
:class:`ChatResult` per request, in order. Nothing raises for one bad request: a request that
still fails after its retries comes back with ``error`` set, for the caller to quarantine. 429,
5xx and connection errors (refused, reset, timed out) are retried, honouring ``Retry-After``;
other 4xx answers are final at once.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from refinery.llm.cache import RequestCache, request_key
from refinery.llm.endpoint import LlmEndpoint

if TYPE_CHECKING:  # imported where a request is sent: `import definitions` never needs it
    import httpx

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class LlmUnavailable(RuntimeError):
    """No request of a batch reached the server: the endpoint is down or misconfigured, so the
    step fails (and can be retried) rather than quarantining every row."""


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict]
    params: dict  # sampling parameters as sent (SamplingParams.request_fields())

    def key(self, model: str) -> str:
        return request_key(model, self.messages, self.params)


@dataclass
class ChatResult:
    """One answer: its text and finish reason, or the error that remained after the retries."""

    text: str | None = None
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cached: bool = False
    error: str | None = None
    transport_error: bool = False  # the server was never reached (or kept failing 5xx/429)
    attempts: int = 0
    seconds: float = 0.0


@dataclass
class UsageTotals:
    """What a client did: requests sent, answers from the cache, retries, errors and tokens (the
    tokens of cached answers counted apart, as what the cache saved)."""

    requests: int = 0
    cache_hits: int = 0
    sent: int = 0
    retries: int = 0
    errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cached_tokens_in: int = 0
    cached_tokens_out: int = 0
    seconds: float = 0.0
    peak_in_flight: int = 0  # most requests awaiting the server at once (≤ max_concurrency)
    finish_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, result: ChatResult) -> None:
        self.requests += 1
        if result.cached:
            self.cache_hits += 1
            self.cached_tokens_in += result.tokens_in
            self.cached_tokens_out += result.tokens_out
        else:
            self.sent += 1
            self.retries += max(0, result.attempts - 1)
            self.tokens_in += result.tokens_in
            self.tokens_out += result.tokens_out
        if result.error:
            self.errors += 1
        elif result.finish_reason:
            self.finish_reasons[result.finish_reason] = self.finish_reasons.get(result.finish_reason, 0) + 1

    @property
    def hit_rate(self) -> float:
        return self.cache_hits / self.requests if self.requests else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "hit_rate": round(self.hit_rate, 4)}


def parse_completion(body: dict) -> ChatResult:
    """The first choice of an OpenAI chat-completion body, with its usage."""
    choices = body.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ChatResult(error=f"malformed response: no choices in {str(body)[:200]}")
    choice = choices[0]
    message = choice.get("message") or {}
    usage = body.get("usage") or {}
    return ChatResult(
        text=message.get("content"),
        finish_reason=choice.get("finish_reason"),
        tokens_in=int(usage.get("prompt_tokens") or 0),
        tokens_out=int(usage.get("completion_tokens") or 0),
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class ChatClient:
    """Requests to one endpoint, answered from the cache when the same request was answered before."""

    def __init__(self, endpoint: LlmEndpoint, use_cache: bool = True):
        self.endpoint = endpoint
        self.use_cache = use_cache and bool(endpoint.cache_path)
        self.totals = UsageTotals()

    # -- the public, synchronous entry point -----------------------------------------------------
    def complete(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Answer every request (in order); identical requests in one call are sent once."""
        started = time.perf_counter()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            results = asyncio.run(self._complete(list(requests)))
        else:  # called from inside an event loop (a notebook): run ours in a thread
            box: list = []
            thread = threading.Thread(target=lambda: box.append(asyncio.run(self._complete(list(requests)))))
            thread.start()
            thread.join()
            results = box[0]
        for result in results:
            self.totals.add(result)
        self.totals.seconds += time.perf_counter() - started
        return results

    # -- internals -------------------------------------------------------------------------------
    async def _complete(self, requests: list[ChatRequest]) -> list[ChatResult]:
        model = self.endpoint.model
        keys = [r.key(model) for r in requests]
        results: dict[str, ChatResult] = {}
        cache = RequestCache(self.endpoint.cache_path) if self.use_cache else None
        try:
            todo: dict[str, ChatRequest] = {}
            for key, request in zip(keys, requests, strict=True):
                if key in results or key in todo:
                    continue
                hit = cache.get(key) if cache is not None else None
                if hit is not None:
                    result = parse_completion(hit)
                    result.cached = True
                    results[key] = result
                else:
                    todo[key] = request
            if todo:
                answered = await self._send_all(todo, cache)
                results.update(answered)
        finally:
            if cache is not None:
                cache.close()
        # a request repeated within the call counts as a cache hit for its later copies
        out, seen = [], set()
        for key in keys:
            result = results[key]
            if key in seen and not result.cached:
                result = ChatResult(**{**asdict(result), "cached": True, "attempts": 0, "seconds": 0.0})
            seen.add(key)
            out.append(result)
        return out

    async def _send_all(
        self, todo: dict[str, ChatRequest], cache: RequestCache | None
    ) -> dict[str, ChatResult]:
        import httpx  # here, not at the top: loading the pipeline's definitions never sends a request

        ep = self.endpoint
        headers = {"Content-Type": "application/json", **ep.extra_headers}
        key = ep.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(
            max_connections=ep.max_concurrency, max_keepalive_connections=ep.max_concurrency
        )
        timeout = httpx.Timeout(ep.timeout_s, connect=ep.connect_timeout_s)
        gate = asyncio.Semaphore(ep.max_concurrency)
        in_flight = [0]
        async with httpx.AsyncClient(limits=limits, timeout=timeout, headers=headers) as http:

            async def one(cache_key: str, request: ChatRequest) -> tuple[str, ChatResult]:
                async with gate:
                    body = {"model": ep.model, "messages": request.messages, **request.params}
                    in_flight[0] += 1
                    self.totals.peak_in_flight = max(self.totals.peak_in_flight, in_flight[0])
                    try:
                        result, answer = await self._send(http, body)
                    finally:
                        in_flight[0] -= 1
                if answer is not None and cache is not None:
                    cache.put(cache_key, ep.model, body, answer)
                return cache_key, result

            pairs = await asyncio.gather(*(one(k, r) for k, r in todo.items()))
        return dict(pairs)

    async def _send(self, http: httpx.AsyncClient, body: dict) -> tuple[ChatResult, dict | None]:
        """POST one request with retries; the result and, when the server answered, its body."""
        import httpx

        ep = self.endpoint
        started = time.perf_counter()
        error, transport = "", False
        for attempt in range(ep.max_retries + 1):
            wait = min(ep.backoff_max_s, ep.backoff_s * 2**attempt) * (0.5 + random.random())
            try:  # timeout_s bounds the whole answer, not only each read (a trickling server)
                response = await asyncio.wait_for(http.post(ep.chat_url, json=body), ep.timeout_s)
            except httpx.TransportError as err:  # refused, reset, timed out
                error, transport = f"{type(err).__name__}: {err}", True
            except TimeoutError:
                error, transport = f"TimeoutError: no complete answer within {ep.timeout_s:g} s", True
            else:
                if response.status_code == 200:
                    try:
                        answer = response.json()
                    except ValueError:
                        answer = None
                        error, transport = f"malformed response: {response.text[:200]!r}", False
                    if answer is not None:
                        result = parse_completion(answer)
                        result.attempts, result.seconds = attempt + 1, time.perf_counter() - started
                        return result, (answer if result.error is None else None)
                    break
                error = f"HTTP {response.status_code}: {response.text[:300]}"
                transport = response.status_code in RETRY_STATUS
                if not transport:
                    break
                wait = _retry_after(response) or wait
            if attempt < ep.max_retries:
                await asyncio.sleep(wait)
        result = ChatResult(
            error=error,
            transport_error=transport,
            attempts=attempt + 1,
            seconds=time.perf_counter() - started,
        )
        return result, None


def require_reachable(results: Sequence[ChatResult]) -> None:
    """Raise :class:`LlmUnavailable` when every request of a batch failed to reach the server."""
    if results and all(r.transport_error for r in results):
        raise LlmUnavailable(
            f"none of {len(results)} requests reached the LLM endpoint after retries: {results[0].error}"
        )
