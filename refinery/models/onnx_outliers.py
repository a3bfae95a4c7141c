"""Outlier channels of the feed-forward down-projections kept in fp32, the rest quantized to int8.

Why: ORT's dynamic int8 quantization takes one scale per activation tensor. The input of the
feed-forward down-projection (the GELU output, 1,536 channels in all-MiniLM-L6-v2) has a few
channels whose values reach 17-24 while the others stay under ~4.5 (measured on the first three
layers). One scale for all of them spends the int8 range on those few channels, and some documents
fall to cosine 0.984 with fp32 (benchmarks/RESULTS.md). Recipe 2 kept these projections whole in
fp32, which cost about a quarter of the int8 graph's time: three 256 x 1536 x 384 fp32 GEMMs per
document.

This module splits each of them in two instead, as LLM.int8() does for its outlier features:

- the ``k`` channels with the largest activations, found by running the fp32 graph on a few
  calibration texts, are moved to the end of the channel order. The up-projection's output columns
  and the GELU's bias are permuted, and the down-projection's input rows with them. GELU works per
  element, so the function is unchanged;
- a ``Split`` on the last axis (contiguous copies, unlike a ``Gather`` on that axis, which measured
  30% slower in all) gives the ordinary channels and the outliers;
- the ordinary part is a MatMul that the quantizer turns into int8 with its own, much tighter
  activation scale. The outlier part (k x 384 weights) stays in fp32 and costs about 1% of the
  GEMM. The two are added.

Recipe 4 (``split_up=True``) makes the cut one step earlier: the up-projection and its GELU are
split in two by columns (the ordinary ones, int8, and the ``k`` outliers, fp32), so the two parts
come out apart and the ``Split`` copy of the 256 x 1536 activation is gone. The numbers are the same.

The calibration texts ship with the code: the model's own README (when its directory has one) and
the docstrings of Python's builtins. They are not drawn from the corpus being embedded, so the
graph does not depend on the data. They only choose which channels count as outliers, and a
channel that was not chosen is quantized as it was before. Nothing is downloaded.
"""

from __future__ import annotations

import builtins
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

OUTLIER_CHANNELS = 32  # per split projection; 16 and 64 measured too (RESULTS.md)
CALIBRATION_CHARS = 1_500  # one calibration text per this many characters of the README


def calibration_texts(model_dir: Path) -> list[str]:
    """Fixed, offline calibration texts: the model's README in chunks, then builtins' docstrings."""
    texts: list[str] = []
    readme = model_dir / "README.md"
    if readme.exists():
        body = readme.read_text(encoding="utf-8", errors="replace")
        texts += [body[i : i + CALIBRATION_CHARS] for i in range(0, len(body), CALIBRATION_CHARS)]
    docs = [getattr(builtins, name).__doc__ or "" for name in sorted(dir(builtins))]
    texts += ["\n".join(docs[i : i + 8]) for i in range(0, len(docs), 8)]
    return [t for t in texts if t.strip()]


def down_projections(graph: Any) -> list[Any]:
    """The feed-forward down-projection MatMuls of the first half of the layers (where the
    outlier activations are; the later layers quantize whole within the cosine bound)."""
    found = []
    for node in graph.node:
        match = re.search(r"layer\.(\d+)/output/dense/MatMul$", node.name)
        if node.op_type == "MatMul" and match:
            found.append((int(match.group(1)), node))
    layers = 1 + max((layer for layer, _ in found), default=-1)
    return [node for layer, node in found if layer < (layers + 1) // 2]


def activation_peaks(
    model: Any, tensors: list[str], feeds: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per channel, the largest |value| each named tensor takes over the calibration feeds."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in tensors:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    peaks = {name: np.zeros(0, dtype=np.float32) for name in tensors}
    for feed in feeds:
        for name, value in zip(
            tensors, session.run(tensors, {k: v for k, v in feed.items() if k in inputs}), strict=True
        ):
            flat = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            peaks[name] = flat if peaks[name].size == 0 else np.maximum(peaks[name], flat)
    return peaks


def split_outlier_channels(
    model: Any,
    feeds: list[dict[str, np.ndarray]],
    k: int = OUTLIER_CHANNELS,
    split_up: bool = False,
) -> list[str]:
    """Rewrite ``model`` (an ``onnx.ModelProto``, in place): each down-projection fed by
    ``BiasGelu(MatMul(x, W_up), b)`` becomes ``Split`` -> int8-able MatMul + fp32 outlier MatMul -> Add.

    ``split_up`` (recipe 4) splits one step earlier instead: the up-projection and the GELU become
    two each (the ordinary columns, int8, and the ``k`` outlier columns, fp32), so the two parts of
    the activation are produced apart and no ``Split`` copies the 256 x 1536 tensor (measured ~2%
    of the int8 graph's time). The products are the same numbers either way.

    Returns the names of the outlier MatMuls, which the quantizer must leave in fp32. A projection
    whose producers are not that pattern (another architecture, an unfused GELU) is left alone and
    its name returned, so it is kept in fp32 whole, as recipe 2 did."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    uses = Counter(name for node in graph.node for name in node.input)
    targets = down_projections(graph)
    peaks = activation_peaks(model, [node.input[0] for node in targets], feeds)
    keep_fp32: list[str] = []
    replaced: dict[str, list[Any]] = {}
    dropped: set[str] = set()  # the up-projections and GELUs that split_up replaced
    for node in targets:
        gelu = producer.get(node.input[0])
        up = producer.get(gelu.input[0]) if gelu is not None else None
        if (
            gelu is None
            or up is None
            or gelu.op_type != "BiasGelu"
            or up.op_type != "MatMul"
            or not {up.input[1], gelu.input[1], node.input[1]} <= weights.keys()
            or (split_up and (uses[up.output[0]] != 1 or uses[gelu.output[0]] != 1))
        ):
            keep_fp32.append(node.name)
            continue
        peak = peaks[node.input[0]]
        channels = peak.size
        outliers = np.sort(np.argsort(-peak, kind="stable")[:k])
        ordinary = np.setdiff1d(np.arange(channels), outliers)
        order = np.concatenate([ordinary, outliers])
        w_up = numpy_helper.to_array(weights[up.input[1]])
        bias = numpy_helper.to_array(weights[gelu.input[1]])
        w_down = numpy_helper.to_array(weights[node.input[1]])
        weights[up.input[1]].CopyFrom(
            numpy_helper.from_array(np.ascontiguousarray(w_up[:, order]), up.input[1])
        )
        weights[gelu.input[1]].CopyFrom(
            numpy_helper.from_array(np.ascontiguousarray(bias[order]), gelu.input[1])
        )
        base = node.name
        sizes = f"{base}_split_sizes"
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.ascontiguousarray(w_down[ordinary]), f"{base}_ordinary_W"),
                numpy_helper.from_array(np.ascontiguousarray(w_down[outliers]), f"{base}_outlier_W"),
            ]
        )
        if split_up:
            split = _split_up_projection(graph, base, up, gelu, w_up, bias, (ordinary, outliers))
            dropped |= {up.name, gelu.name}
            keep_fp32.append(f"{base}_outlier_up")
        else:
            graph.initializer.append(
                numpy_helper.from_array(np.array([channels - k, k], dtype=np.int64), sizes)
            )
            split = [
                helper.make_node(
                    "Split",
                    [node.input[0], sizes],
                    [f"{base}_ordinary_x", f"{base}_outlier_x"],
                    axis=-1,
                    name=f"{base}_split",
                )
            ]
        replaced[base] = [
            *split,
            helper.make_node(
                "MatMul",
                [f"{base}_ordinary_x", f"{base}_ordinary_W"],
                [f"{base}_ordinary_y"],
                name=f"{base}_ordinary",
            ),
            helper.make_node(
                "MatMul",
                [f"{base}_outlier_x", f"{base}_outlier_W"],
                [f"{base}_outlier_y"],
                name=f"{base}_outlier",
            ),
            helper.make_node(
                "Add", [f"{base}_ordinary_y", f"{base}_outlier_y"], list(node.output), name=f"{base}_sum"
            ),
        ]
        keep_fp32.append(f"{base}_outlier")
    nodes = []
    for node in graph.node:
        if node.name in dropped:
            continue
        nodes += replaced.get(node.name, [node]) if node in targets else [node]
    set_nodes(graph, nodes)
    return keep_fp32


def set_nodes(graph: Any, nodes: list[Any]) -> None:
    """Make ``nodes`` the graph's node list, dropping the initializers no node reads any more (the
    weights of replaced nodes would otherwise stay in the saved model)."""
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _split_up_projection(
    graph: Any, base: str, up: Any, gelu: Any, w_up: np.ndarray, bias: np.ndarray, parts: tuple
) -> list[Any]:
    """Two ``MatMul`` + ``BiasGelu`` pairs over the same input: the ``ordinary`` columns of the
    up-projection give ``{base}_ordinary_x`` and the ``outliers`` give ``{base}_outlier_x``."""
    from onnx import helper, numpy_helper

    nodes = []
    for part, columns in zip(("ordinary", "outlier"), parts, strict=True):
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.ascontiguousarray(w_up[:, columns]), f"{base}_{part}_up_W"),
                numpy_helper.from_array(np.ascontiguousarray(bias[columns]), f"{base}_{part}_up_b"),
            ]
        )
        nodes += [
            helper.make_node(
                "MatMul",
                [up.input[0], f"{base}_{part}_up_W"],
                [f"{base}_{part}_up"],
                name=f"{base}_{part}_up",
            ),
            helper.make_node(
                gelu.op_type,
                [f"{base}_{part}_up", f"{base}_{part}_up_b"],
                [f"{base}_{part}_x"],
                name=f"{base}_{part}_gelu",
                domain=gelu.domain,
            ),
        ]
    return nodes
