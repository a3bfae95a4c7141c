"""The int8 graph's recipe-6 rewrites: the Q/K/V biases after their MatMuls, the GELU bias in the
up-projection, and the embedding layer as plain ops with token type 0 folded into the position
table. Together they keep the fp32 graph's hidden states on real text, and the graph reads only
``input_ids``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from refinery.models.embedder import DEFAULT_MODEL, resolve_model_path
from refinery.models.onnx_attention import attention_to_unmasked_mha
from refinery.models.onnx_bias import bias_into_matmuls
from refinery.models.onnx_embed import unfuse_embeddings
from refinery.models.onnx_embedder import onnx_graph
from refinery.models.onnx_gelu import tanh_gelu
from tests.unit.onnx_run import real_text_feeds, run_graph


def test_recipe6_rewrites_keep_the_hidden_states():
    path = resolve_model_path(DEFAULT_MODEL)
    fused = onnx.load(str(onnx_graph(path, "none")))
    reference, rewritten = onnx.ModelProto(), onnx.ModelProto()
    reference.CopyFrom(fused)
    rewritten.CopyFrom(fused)
    attention_to_unmasked_mha(reference)
    tanh_gelu(reference)
    assert attention_to_unmasked_mha(rewritten, bias_in_matmuls=True) == 6
    tanh_gelu(rewritten)
    assert bias_into_matmuls(rewritten) == 6  # each layer's GELU bias
    assert unfuse_embeddings(rewritten, zero_token_types=True) == 1
    ops = [n.op_type for n in rewritten.graph.node]
    assert "EmbedLayerNormalization" not in ops and ops.count("LayerNormalization") == 13
    assert all(len(n.input) == 3 for n in rewritten.graph.node if n.op_type == "MultiHeadAttention")
    assert all(len(n.input) == 1 for n in rewritten.graph.node if n.op_type == "FastGelu")
    assert [i.name for i in rewritten.graph.input] == ["input_ids"]

    feeds = real_text_feeds(path)
    for got, want in zip(run_graph(rewritten, feeds), run_graph(reference, feeds), strict=True):
        np.testing.assert_allclose(got, want, atol=2e-4)


def test_bias_after_a_split_sum_moves_to_the_matmul():
    """``(MatMul(x, W) + outlier) + b`` becomes ``(MatMul(x, W) + b) + outlier``: same values, and
    the bias now follows the MatMul, where ORT folds it into the int8 GEMM."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 6)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=(3, 6)).astype(np.float32), "wo"),
        numpy_helper.from_array(rng.normal(size=6).astype(np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"], name="ordinary"),
        helper.make_node("MatMul", ["o", "wo"], ["yo"], name="outlier"),
        helper.make_node("Add", ["y", "yo"], ["s"], name="sum"),
        helper.make_node("Add", ["bias", "s"], ["out"], name="add_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "split",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8]),
            helper.make_tensor_value_info("o", TensorProto.FLOAT, [4, 3]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 6])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    before = onnx.ModelProto()
    before.CopyFrom(model)
    assert bias_into_matmuls(model) == 1
    onnx.checker.check_model(model)
    by_name = {n.name: n for n in model.graph.node}
    assert list(by_name["sum_bias"].input) == ["y", "bias"] and "add_bias" not in by_name
    assert list(by_name["sum"].output) == ["out"]
    feed = {"x": rng.normal(size=(4, 8)).astype(np.float32), "o": rng.normal(size=(4, 3)).astype(np.float32)}
    np.testing.assert_allclose(run_graph(model, [feed])[0], run_graph(before, [feed])[0], atol=1e-5)
