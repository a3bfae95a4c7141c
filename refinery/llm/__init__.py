"""LLM operators over an OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp, Ollama, ``transformers
serve``): a chat client with a concurrency limit, retries and a persistent request cache
(:mod:`refinery.llm.client`, :mod:`refinery.llm.cache`), prompt templates with a hash
(:mod:`refinery.llm.prompts`), output parsers that name a quarantine reason
(:mod:`refinery.llm.parse`), and the batch processors of the LLM stages (synthesis, rewriting,
judging). Dagster-free: the ``llm`` resource hands these a plain :class:`LlmEndpoint`."""

from refinery.llm.endpoint import LlmEndpoint, SamplingParams

__all__ = ["LlmEndpoint", "SamplingParams"]
