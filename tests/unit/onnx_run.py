"""Running an ONNX graph in the tests that compare a rewritten graph with the one it came from."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort


def run_graph(model: onnx.ModelProto, feeds: list[dict]) -> list[np.ndarray]:
    """The first output of ``model`` for each feed, on one CPU thread; each feed may hold inputs
    that the graph does not take (a rewritten graph may drop one), which are left out."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return [session.run(None, {k: v for k, v in feed.items() if k in names})[0] for feed in feeds]


def real_text_feeds(model_path) -> list[dict]:
    """Feeds for two long real documents (the full 256-piece window) and a short query: the shapes
    a rewrite must keep (the position slice follows the length)."""
    from tokenizers import Tokenizer

    from tests.unit.real_text import real_documents

    tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    texts = [*[t for t in real_documents(debian_limit=10) if len(t) > 500][:2], "a short query"]
    feeds = []
    for text in texts:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        feeds.append(
            {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        )
    assert max(f["input_ids"].shape[1] for f in feeds) == 256
    return feeds
