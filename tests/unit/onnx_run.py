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
