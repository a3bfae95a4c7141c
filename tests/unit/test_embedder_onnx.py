"""The ONNX Runtime embedder against the torch one on real text, its length-sorted batches, and a
cold search that never imports torch."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.models.embedder import load_embedder
from refinery.paths import Layout
from refinery.quality.embeddings import write_embeddings
from refinery.retrieval import Searcher, VectorIndex, search
from refinery.storage import Storage
from tests.unit.real_text import real_documents

REPO = Path(__file__).resolve().parents[2]
MODEL = "bundled:all-MiniLM-L6-v2"
QUERY = "The argparse module makes it easy to write user-friendly command-line interfaces"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    docs = list(real_documents(debian_limit=40))
    rng = random.Random(5)
    picked = rng.sample(docs, 32)
    # short and long texts mixed, so batches formed by length differ from the input order
    return [t[: rng.choice([60, 400, 3_000, 100_000])] for t in picked]


@pytest.fixture(scope="module")
def torch_vectors(texts) -> np.ndarray:
    return load_embedder(MODEL, "cpu", 16, True, backend="torch").encode(texts)


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_onnx_vectors_keep_cosine_with_torch_on_real_text(texts, torch_vectors, quantize):
    onnx = load_embedder(MODEL, "cpu", 16, True, backend="onnx", quantize=quantize, threads=1)
    assert (onnx.backend, onnx.quantize, onnx.dim) == ("onnx", quantize, 384)
    vectors = onnx.encode(texts)
    assert vectors.shape == torch_vectors.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = (vectors * torch_vectors).sum(axis=1)
    assert cosine.min() >= (0.9999 if quantize == "none" else 0.99), cosine.min()


def test_auto_is_onnx_int8_on_cpu():
    embedder = load_embedder(MODEL, "cpu")
    assert (embedder.backend, embedder.quantize) == ("onnx", "int8")
    with pytest.raises(ValueError, match="unknown embedding backend"):
        load_embedder(MODEL, "cpu", backend="tensorflow")


def test_length_sorted_batches_come_back_in_input_order(texts):
    onnx = load_embedder(MODEL, "cpu", 16, True, backend="onnx", quantize="none", threads=1)
    lengths = [len(e.ids) for e in onnx.tokenize(texts)]
    assert lengths != sorted(lengths)  # the input is not already in length order
    together = onnx.encode(texts, batch_size=7)
    alone = np.concatenate([onnx.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=2e-5)


def test_cutting_long_texts_before_tokenizing_keeps_the_pieces(texts):
    onnx = load_embedder(MODEL, "cpu", 16, True, backend="onnx", quantize="none", threads=1)
    # "understanding " is one piece per 14 chars: the first cut is short of the window and is retried
    long = [t for t in texts if len(t) > 3_000] + ["word " * 5_000, "x" * 50_000, "a.b " * 3_000]
    long += ["understanding " * 3_000, "understanding " * 200 + "word " * 5_000]
    full = [e.ids for e in onnx.tokenizer.encode_batch(long)]
    assert [e.ids for e in onnx.tokenize(long)] == full
    assert max(len(ids) for ids in full) == onnx.max_tokens == 256


def _home(tmp_path: Path) -> Layout:
    layout = Layout.at(tmp_path / "home")
    storage = Storage(layout.storage)
    docs = [t for t in real_documents(debian_limit=0) if len(t) > 200][:30]
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(len(docs))], "text": docs, "source": "docs"})
    path = storage.path("quality_scored", "docs")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    write_embeddings(storage, "quality_scored", "docs", load_embedder(MODEL, "cpu"), {"asset": "x"})
    VectorIndex.at(layout).sync(storage)
    return layout


def test_cold_search_imports_no_torch_and_finds_the_document(tmp_path):
    layout = _home(tmp_path)
    script = textwrap.dedent(
        f"""
        import json, sys
        from refinery.retrieval.search import search
        hits = search("The argparse module makes it easy to write user-friendly command-line interfaces",
                      5, home={str(layout.home)!r}, with_stage=False)
        print(json.dumps({{"torch": "torch" in sys.modules, "ids": hits["id"].tolist()}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["torch"] is False
    in_process = search(
        QUERY,
        5,
        home=layout.home,
        with_stage=False,
    )
    assert answer["ids"] == in_process["id"].tolist()
    searcher = Searcher.open(layout.home)  # what a long-lived process holds: the same answers
    assert searcher.encoder.backend == "onnx"
    held = searcher(QUERY, 5, with_stage=False)
    assert held["id"].tolist() == answer["ids"]
