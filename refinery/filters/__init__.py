"""Heuristic quality filters: Gopher quality, Gopher repetition, C4, and a language gate."""
