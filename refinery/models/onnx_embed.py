"""The embedding layer of the int8 graph as plain ops, not ORT's ``EmbedLayerNormalization``.

Why: ORT's transformer optimizer fuses BERT's embedding layer (word, position and token-type
lookups, their sum and a layer norm) into one ``EmbedLayerNormalization``. Its CPU kernel took
1.0% of recipe 5's kernel time (about 0.22 ms per 256-piece text), while a ``LayerNormalization``
over the same 256 x 384 values takes about 0.04 ms and the lookups are row copies.
:func:`unfuse_embeddings` writes the layer as ``Gather`` (word) + ``Gather`` (token type) + a
``Slice`` of the position table, two ``Add`` and a ``LayerNormalization``, which compute the same
sums up to float rounding (tested against the fused graph).

``zero_token_types`` (the int8 graph of recipe 6): the embedder encodes one text per run and feeds
token type 0 for every piece, as sentence-transformers does for a single text. The token-type row 0
is then added into the position table once, at build time, so a run does one ``Gather``, one ``Add``
and the layer norm; the graph stops reading ``token_type_ids`` and ``attention_mask`` (which only
fed the fused node's mask index), and both inputs are dropped, so a run converts one input, not three.
"""

from __future__ import annotations

from typing import Any


def unfuse_embeddings(model: Any, zero_token_types: bool = False) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto``, in place): each ``EmbedLayerNormalization`` whose
    mask-index output nobody reads and which has no position-ids input becomes lookups, adds and a
    ``LayerNormalization``. Returns how many nodes were rewritten; others are left as they are.

    ``zero_token_types`` folds token type 0 into the position table and drops the inputs the graph
    no longer reads (module docstring); only for a graph that is always fed token type 0."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    nodes: list[Any] = []
    rewritten = 0
    for node in graph.node:
        inputs = list(node.input) + [""] * (9 - len(node.input))
        if (
            node.op_type != "EmbedLayerNormalization"
            or node.domain != "com.microsoft"
            or not inputs[1]  # no token types: not the BERT layout this rewrite writes
            or inputs[8]  # explicit position ids
            or (len(node.output) > 1 and node.output[1] in read)
            or (len(node.output) > 2 and node.output[2] and node.output[2] in read)
        ):
            nodes.append(node)
            continue
        ids, types, word, position, segment, gamma, beta = inputs[:7]
        if zero_token_types:
            if position not in weights or segment not in weights:
                nodes.append(node)
                continue
            table = numpy_helper.to_array(weights[position]) + numpy_helper.to_array(weights[segment])[0]
            position = f"{node.name or 'EmbedLayerNormalization'}_position_type0"
            graph.initializer.append(numpy_helper.from_array(table.astype(np.float32), position))
        epsilon = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-12)
        base = node.name or "EmbedLayerNormalization"
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array([1], dtype=np.int64), f"{base}_one"),
                numpy_helper.from_array(np.array([2], dtype=np.int64), f"{base}_two"),
                numpy_helper.from_array(np.array([0], dtype=np.int64), f"{base}_zero"),
            ]
        )
        summed = f"{base}_sum" if not zero_token_types else f"{base}_total"
        nodes += [
            helper.make_node("Gather", [word, ids], [f"{base}_word"], name=f"{base}_word", axis=0),
            helper.make_node("Shape", [ids], [f"{base}_shape"], name=f"{base}_shape"),
            helper.make_node(
                "Slice",
                [f"{base}_shape", f"{base}_one", f"{base}_two"],
                [f"{base}_length"],
                name=f"{base}_length",
            ),
            helper.make_node(
                "Slice",
                [position, f"{base}_zero", f"{base}_length", f"{base}_zero"],
                [f"{base}_position"],
                name=f"{base}_position",
            ),
            helper.make_node(
                "Add", [f"{base}_word", f"{base}_position"], [summed], name=f"{base}_add_position"
            ),
            helper.make_node(
                "LayerNormalization",
                [f"{base}_total", gamma, beta],
                [node.output[0]],
                name=f"{base}_norm",
                axis=-1,
                epsilon=float(epsilon),
            ),
        ]
        if not zero_token_types:
            nodes[-1:-1] = [
                helper.make_node("Gather", [segment, types], [f"{base}_type"], name=f"{base}_type", axis=0),
                helper.make_node("Add", [summed, f"{base}_type"], [f"{base}_total"], name=f"{base}_add_type"),
            ]
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    if rewritten and zero_token_types:
        _drop_unread(graph)
    return rewritten


def _drop_unread(graph: Any) -> None:
    """Remove nodes none of whose outputs is read (the casts that fed the fused node), then the
    graph inputs and initializers that nothing reads any more."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        kept = [node for node in graph.node if any(out in read for out in node.output)]
        if len(kept) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(kept)
    unused_inputs = [i for i in graph.input if i.name not in read]
    for value in unused_inputs:
        graph.input.remove(value)
    kept_weights = [init for init in graph.initializer if init.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept_weights)
