"""The int8 graph's attention rewrite (recipe 4): Attention -> Q/K/V MatMuls + unmasked
MultiHeadAttention computes the same hidden states for an unpadded text, refuses what it cannot
reproduce, and the int8 embedder refuses padded batches (its attention has no mask)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from refinery.models.embedder import DEFAULT_MODEL, load_embedder, resolve_model_path
from refinery.models.onnx_attention import attention_to_unmasked_mha
from refinery.models.onnx_embedder import onnx_graph
from tests.unit.onnx_run import real_text_feeds, run_graph


def test_unmasked_mha_keeps_the_hidden_states_of_unpadded_texts():
    path = resolve_model_path(DEFAULT_MODEL)
    fused = onnx.load(str(onnx_graph(path, "none")))
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(fused)
    assert attention_to_unmasked_mha(rewritten) == 6
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Attention" not in ops and ops.count("MultiHeadAttention") == 6
    feeds = real_text_feeds(path)
    for got, want in zip(run_graph(rewritten, feeds), run_graph(fused, feeds), strict=True):
        np.testing.assert_allclose(got, want, atol=2e-4)


def test_attention_it_cannot_reproduce_is_refused():
    from onnx import TensorProto, helper

    weights = helper.make_tensor("w", TensorProto.FLOAT, [4, 12], np.zeros(48, dtype=np.float32))
    bias = helper.make_tensor("b", TensorProto.FLOAT, [12], np.zeros(12, dtype=np.float32))
    node = helper.make_node(
        "Attention",
        ["x", "w", "b"],
        ["y"],
        name="causal",
        domain="com.microsoft",
        num_heads=2,
        unidirectional=1,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])],
        [weights, bias],
    )
    with pytest.raises(ValueError, match="causal: an Attention node with"):
        attention_to_unmasked_mha(helper.make_model(graph))


def test_int8_embedder_refuses_padded_batches():
    embedder = load_embedder(DEFAULT_MODEL, "cpu", 16, True, backend="onnx", quantize="int8", threads=1)
    encodings = embedder.tokenize(["one text", "another, longer text than the first"])
    with pytest.raises(ValueError, match="one text per run"):
        embedder._encode_batch(encodings, max(len(e.ids) for e in encodings))
    vectors = embedder.encode(["one text", "another, longer text than the first"], batch_size=8)
    np.testing.assert_allclose(vectors[0], embedder.encode(["one text"])[0], atol=1e-6)


def test_int8_threads_run_texts_side_by_side_with_the_same_vectors():
    import builtins

    docs = [getattr(builtins, name).__doc__ or "" for name in ("dict", "int", "open", "print", "str", "zip")]
    texts = [t[:n] for t in docs for n in (40, 900, 4_000)]  # real text, short and long
    alone = load_embedder(DEFAULT_MODEL, "cpu", 16, True, backend="onnx", quantize="int8", threads=1)
    side_by_side = load_embedder(DEFAULT_MODEL, "cpu", 16, True, backend="onnx", quantize="int8", threads=2)
    assert (alone.workers, side_by_side.workers) == (1, 2)
    assert side_by_side.session.get_session_options().intra_op_num_threads == 1
    np.testing.assert_allclose(side_by_side.encode(texts), alone.encode(texts), atol=1e-6)
