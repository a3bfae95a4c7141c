"""The int8 graph's tanh GELU (recipe 5): ``BiasGelu`` nodes become ``FastGelu`` on the same inputs,
other nodes are left alone, and ORT's two kernels agree within the approximation's 5e-4."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from refinery.models.onnx_gelu import tanh_gelu


def _gelu_graph() -> onnx.ModelProto:
    bias = numpy_helper.from_array(np.linspace(-0.5, 0.5, 64, dtype=np.float32), "b")
    nodes = [
        helper.make_node("BiasGelu", ["x", "b"], ["g"], domain="com.microsoft", name="gelu"),
        helper.make_node("Relu", ["g"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [bias],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_tanh_gelu_renames_only_bias_gelu_and_stays_within_the_approximation():
    exact = _gelu_graph()
    fast = onnx.ModelProto()
    fast.CopyFrom(exact)
    assert tanh_gelu(fast) == 1
    assert [n.op_type for n in fast.graph.node] == ["FastGelu", "Relu"]
    assert list(fast.graph.node[0].input) == ["x", "b"]
    x = np.linspace(-6, 6, 256, dtype=np.float32).reshape(4, 64)
    diff = np.abs(_run(fast, x) - _run(exact, x))
    assert diff.max() < 5e-4 and diff.max() > 0  # the tanh form, not the erf form
    assert tanh_gelu(fast) == 0  # nothing left to rewrite
