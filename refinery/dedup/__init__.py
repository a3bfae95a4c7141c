"""Deduplication: exact (content hash) and fuzzy (MinHash-LSH) against persistent indexes that
concurrent runs claim atomically (see docs/dedup.md), and a corpus-wide batch mode for backfills."""
