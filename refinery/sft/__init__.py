"""Fine-tuning data: instruction, conversation and preference records in one schema.

Ingest normalises the common dialects (Alpaca, Dolly, ShareGPT, OpenAI messages, prompt with
chosen/rejected, ranked responses with scores) to one row per record with a ``kind``; rules and
prompt dedup check them; selection picks a diverse subset by clustering prompt embeddings.
"""
