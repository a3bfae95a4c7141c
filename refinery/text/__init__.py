"""Shared text primitives: tokenization and language word lists."""
