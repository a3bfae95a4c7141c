"""Deduplication: exact (content hash) and fuzzy (MinHash-LSH), each with a persistent index."""
