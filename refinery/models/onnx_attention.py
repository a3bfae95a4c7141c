"""The fused attention of a graph that encodes one text per run, rewritten for ORT's flash kernel.

Why: ORT's transformer optimizer fuses BERT self-attention into one ``Attention`` node (packed
Q/K/V weights, a padding-mask input). Its CPU kernel (and ``QAttention``, its int8 form) copies the
mask into every head's 256 x 256 score matrix, writes all the scores out, then runs softmax over
them. The int8 graph encodes each text alone (activations are quantized per call), so there is no
padding and the mask is all ones. ``MultiHeadAttention`` with no mask takes ORT's CPU flash-attention
path (``MlasFlashAttention``: scores in blocks that stay in L2, softmax on the fly). Measured on
real text with one thread, this took the int8 graph from 26.6 to 25.2 ms per document
(benchmarks/RESULTS.md, "Embeddings on CPU, recipe 4").

The packed projection becomes three MatMuls (Q, K and V) on the same input rather than one MatMul
and a ``Split``: ORT then quantizes that input once for the three int8 products, and no 256 x 1152
copy is made. The projection's bias goes to ``MultiHeadAttention``, which adds it while it
transposes to heads. The function is unchanged for an unpadded input (tested to 2e-4); a padded
batch would attend to its padding, so :class:`refinery.models.onnx_embedder.OnnxEmbedder` refuses
batches on such a graph.

Since recipe 6 (``bias_in_matmuls``) the projection's bias is an ``Add`` after each of the three
MatMuls, which ORT folds into the int8 GEMM (it adds the bias as it writes the output), and
``MultiHeadAttention`` gets no bias: it then only transposes Q, K and V to heads, instead of adding
as it transposes. Measured with the other recipe-6 changes (benchmarks/RESULTS.md, recipe 6).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from refinery.models.onnx_outliers import set_nodes


def attention_to_unmasked_mha(model: Any, bias_in_matmuls: bool = False) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto``, in place): each ``com.microsoft`` ``Attention``
    node becomes Q, K and V MatMuls feeding a ``MultiHeadAttention`` with no mask.

    Returns how many nodes were rewritten. An ``Attention`` with attributes or inputs this rewrite
    does not reproduce (past state, unidirectional, attention bias, unequal Q/K/V sizes, weights
    that are not initializers) is refused with a ``ValueError`` rather than changed silently.
    ``bias_in_matmuls`` adds the packed bias's three parts after the MatMuls (module docstring)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    nodes: list[Any] = []
    rewritten = 0
    for node in graph.node:
        if node.op_type != "Attention" or node.domain != "com.microsoft":
            nodes.append(node)
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        unsupported = set(attributes) - {"num_heads", "mask_filter_value", "scale"}
        extra_inputs = [name for name in node.input[4:] if name]
        if (
            unsupported
            or attributes.get("unidirectional", 0)
            or extra_inputs
            or len(node.output) > 1
            or node.input[1] not in weights
            or node.input[2] not in weights
        ):
            raise ValueError(
                f"{node.name}: an Attention node with {sorted(unsupported) or extra_inputs or 'past state'} "
                "cannot be rewritten to MultiHeadAttention without changing what it computes"
            )
        packed = numpy_helper.to_array(weights[node.input[1]])
        hidden = packed.shape[1] // 3
        if packed.shape[1] != 3 * hidden:
            raise ValueError(f"{node.name}: Q, K and V projections of unequal width are not supported")
        bias = numpy_helper.to_array(weights[node.input[2]]) if bias_in_matmuls else None
        parts = []
        for index, part in enumerate("qkv"):
            name = f"{node.name}_{part}"
            graph.initializer.append(
                numpy_helper.from_array(
                    np.ascontiguousarray(packed[:, index * hidden : (index + 1) * hidden]), f"{name}_W"
                )
            )
            nodes.append(
                helper.make_node("MatMul", [node.input[0], f"{name}_W"], [name], name=f"{name}_MatMul")
            )
            if bias is not None:
                graph.initializer.append(
                    numpy_helper.from_array(
                        np.ascontiguousarray(bias[index * hidden : (index + 1) * hidden]), f"{name}_b"
                    )
                )
                nodes.append(
                    helper.make_node("Add", [name, f"{name}_b"], [f"{name}_biased"], name=f"{name}_bias")
                )
                name = f"{name}_biased"
            parts.append(name)
        kept = {k: v for k, v in attributes.items() if k in ("num_heads", "mask_filter_value", "scale")}
        nodes.append(
            helper.make_node(
                "MultiHeadAttention",
                parts if bias_in_matmuls else [*parts, node.input[2]],
                [node.output[0]],
                name=f"{node.name}_mha",
                domain="com.microsoft",
                **kept,
            )
        )
        rewritten += 1
    set_nodes(graph, nodes)
    return rewritten
