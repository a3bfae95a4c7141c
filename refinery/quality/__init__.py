"""Model-based text quality: KenLM perplexity (CCNet), a trained quality classifier (GPT-3 style) and
embedding-based semantic deduplication (SemDeDup).

Everything here is Dagster-free and loads models from local files only. Heavy modules (kenlm,
torch, sentence-transformers) are imported inside functions, so importing this package is cheap.
"""
