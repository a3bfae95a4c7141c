"""The int8 graph's outlier split (recipes 3 and 4): the split alone leaves the function unchanged, it
picks the channels with the largest activations, and the int8 graph keeps only those small MatMuls in
fp32 (recipe 4: split at the up-projection, no Split node; attention without a mask; recipe 5: only
the outliers' down-projections in fp32, the tanh GELU; recipe 6: biases in the int8 GEMMs, plain
embedding ops)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from refinery.models.embedder import DEFAULT_MODEL, resolve_model_path
from refinery.models.onnx_embedder import calibration_feeds, onnx_graph
from refinery.models.onnx_outliers import (
    OUTLIER_CHANNELS,
    activation_peaks,
    down_projections,
    split_outlier_channels,
)
from tests.unit.real_text import real_documents


@pytest.fixture(scope="module")
def path():
    return resolve_model_path(DEFAULT_MODEL)


def _outputs(model: onnx.ModelProto, feeds: list[dict]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return [session.run(None, {k: v for k, v in feed.items() if k in names})[0] for feed in feeds]


@pytest.mark.parametrize("split_up", [True])  # recipe 4; recipe 3's Split (False) runs in the benchmark only
def test_split_keeps_the_function_and_picks_the_largest_channels(path, split_up):
    fused = onnx.load(str(onnx_graph(path, "none")))
    split = onnx.ModelProto()
    split.CopyFrom(fused)
    assert len(calibration_feeds(path)) >= 10
    feeds = calibration_feeds(path)[:4]  # a few keep the test short; the build uses them all
    targets = down_projections(fused.graph)
    assert len(targets) == 3  # layers 0-2 of the six
    peaks = activation_peaks(fused, [n.input[0] for n in targets], feeds)
    for peak in peaks.values():  # outliers exist: the few largest channels dwarf the median
        assert np.sort(peak)[-1] > 3 * np.median(peak)

    kept = split_outlier_channels(split, feeds, split_up=split_up)
    outlier_ups = [f"{n.name}_outlier_up" for n in targets] if split_up else []
    assert sorted(kept) == sorted([f"{n.name}_outlier" for n in targets] + outlier_ups)
    splits = [n for n in split.graph.node if n.op_type == "Split"]
    assert len(splits) == (0 if split_up else 3)
    gelus = [n for n in split.graph.node if n.op_type == "BiasGelu"]
    assert len(gelus) == (9 if split_up else 6)  # split_up: two GELUs in each of layers 0-2
    after = activation_peaks(split, [f"{n.name}_outlier_x" for n in targets], feeds)
    for node in targets:  # the fp32 part holds the k largest channels of the calibration texts
        assert np.allclose(
            np.sort(after[f"{node.name}_outlier_x"]), np.sort(peaks[node.input[0]])[-OUTLIER_CHANNELS:]
        )

    texts = [t for t in real_documents(debian_limit=10) if len(t) > 500][:3]
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    real = []
    for text in texts:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        real.append(
            {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        )
    for got, want in zip(_outputs(split, real), _outputs(fused, real), strict=True):
        np.testing.assert_allclose(got, want, atol=2e-4)


def test_int8_graph_keeps_only_the_outlier_matmuls_in_fp32(path):
    graph = onnx.load(str(onnx_graph(path, "int8")), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    # recipe 5: only the outliers' down-projections (inputs up to ~24) stay fp32; their
    # up-projection columns read the layer norm's output and are int8 like the ordinary ones
    fp32 = sorted(n.name for n in graph.node if n.op_type == "MatMul")
    assert len(fp32) == 3 and all(name.endswith("_outlier") for name in fp32)
    # the tanh GELU everywhere (two in each split layer)
    assert ops.count("FastGelu") == 9 and "BiasGelu" not in ops
    assert "Split" not in ops and "SkipLayerNormalization" not in ops
    assert ops.count("MultiHeadAttention") == 6 and "QAttention" not in ops and "Attention" not in ops
    # no mask: ORT's flash-attention kernel; Q, K, V quantized (18 of the 36 int8 products);
    # recipe 6: their biases follow the MatMuls (folded into the int8 GEMMs), none in the attention
    assert all(len(n.input) == 3 for n in graph.node if n.op_type == "MultiHeadAttention")
    assert ops.count("MatMulInteger") == 39
    # recipe 6: GELU biases moved into the up-projections, embeddings as plain ops, ids only
    assert all(len(n.input) == 1 for n in graph.node if n.op_type == "FastGelu")
    assert "EmbedLayerNormalization" not in ops and [i.name for i in graph.input] == ["input_ids"]
    assert sum(n.name.endswith("_sum_bias") for n in graph.node) == 3  # split down-projections' bias
