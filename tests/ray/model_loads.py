"""Model loaders and inference functions for tests/ray/test_model_pools.py, importable on Ray
workers. Each load leaves a marker file (``<what>-<pid>-<n>``) in the markers folder, so the test
counts loads per actor and checks that the driver never loaded."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np

_count = itertools.count()


def _mark(markers: str, what: str) -> None:
    (Path(markers) / f"{what}-{os.getpid()}-{next(_count)}").write_text("")


def load_embedder(markers: str):
    from refinery.models.embedder import load_embedder as load

    _mark(markers, "embedder")
    return load(device="cpu", batch_size=16)


def embed(model, frame) -> np.ndarray:
    from refinery.quality.embeddings import EmbeddingParams, embed_documents

    return embed_documents(model, frame["text"].tolist(), EmbeddingParams())


def load_classifier(markers: str, path: str):
    from refinery.quality.classifier import load_classifier as load

    _mark(markers, "classifier")
    return load(path)


def classify(model, frame) -> np.ndarray:
    return model.score(frame["text"].tolist(), keys=frame["key"].tolist())


def first_words(frame):
    """A CPU decode step: what reaches the model is already transformed (its first 30 words)."""
    return frame.assign(text=[" ".join(t.split()[:30]) for t in frame["text"]])


def classify_dying_once(markers: str, model, frame) -> np.ndarray:
    """:func:`classify`, but the first call in the whole cluster kills its own process (an actor
    lost mid-slice: Ray must restart it and retry the slice there)."""
    flag = Path(markers) / "killed-once"
    try:
        flag.touch(exist_ok=False)
    except FileExistsError:
        return classify(model, frame)
    os._exit(1)


def scores_of_slice(piece, outputs, model: dict) -> dict:
    """A pooled run's per-slice finish: the slice's scores, back to the driver (a test's few rows)."""
    scores = [] if outputs is None else outputs.column("output").to_pylist()
    return {"index": piece.index, "scores": scores, "model": model}
