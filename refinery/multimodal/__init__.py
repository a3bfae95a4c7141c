"""Multimodal data: image–text pairs scored with CLIP, and query-based video keyframes.

Nothing here imports torch, open_clip or decord at module import: the Dagster code location
re-imports every module in each step process, so heavy packages load inside the functions that
use them.
"""
