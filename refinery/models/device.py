"""Choosing where models run: ``cpu``, ``cuda`` or ``auto``, and whether to use fp16."""

from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str) -> str:
    """The torch device to use; ``cuda`` without a GPU is an error, ``auto`` falls back to CPU."""
    if requested not in DEVICES:
        raise ValueError(f"unknown device {requested!r}; choose one of {DEVICES}")
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    if requested == "auto":
        return "cuda" if has_cuda else "cpu"
    return requested


def use_fp16(device: str, fp16: bool) -> bool:
    """Half precision only on a GPU: on CPU it is slower and less accurate."""
    return fp16 and device.startswith("cuda")
