"""Sentence embeddings through ONNX Runtime: the CPU's fast path, and a query encoder without torch.

Why: the torch path pays, per batch, for every pad token of its longest text, runs eager kernels,
and costs ~5 s of imports before the first vector (torch, transformers, sentence-transformers).
This path:

- exports the sentence-transformers model's transformer to ONNX once, into a cache directory
  (``$REFINERY_MODEL_CACHE``, default ``~/.cache/refinery/onnx``), keyed by a hash of the model's
  files; export needs torch, later loads do not. Nothing is downloaded.
- tokenizes with the ``tokenizers`` library from the model's own ``tokenizer.json`` (truncated to
  its ``max_seq_length``, 256 word pieces for all-MiniLM-L6-v2);
- sorts the texts of a call by token length and batches neighbours, so a batch pads only to its own
  longest text, then puts the vectors back in the caller's order;
- fuses the graph with ORT's transformer optimizer (attention, layer norms, GELU) once, at export,
  and runs it with ORT's full graph optimizations; ``threads`` intra-op threads (0: one per core);
- mean-pools over the attention mask and L2-normalises, as the model's pooling config says.

``quantize="int8"`` (the default of :func:`refinery.models.embedder.load_embedder`) applies ORT's
dynamic int8 quantization to the fused graph (weights int8 per channel, activations quantized per
call). The few activation channels that would spoil one int8 scale (the feed-forward outliers of
the early layers) go through a small fp32 MatMul of their own (:mod:`refinery.models.onnx_outliers`,
recipe 3, split at the up-projection since recipe 4); every document measured keeps cosine >= 0.99
with the fp32 vector (benchmarks/RESULTS.md). Since recipe 5 the int8 graph's GELU is the tanh form
(:mod:`refinery.models.onnx_gelu`), and only the outliers' down-projections stay fp32.
Since recipe 4 the fused attention is rewritten as Q/K/V MatMuls and a ``MultiHeadAttention``
without a mask (:mod:`refinery.models.onnx_attention`), which takes ORT's CPU flash-attention
kernel; that is exact only because each text runs alone.
Residual adds and layer norms stay two ops, not ORT's ``SkipLayerNormalization``: that kernel took
0.52 ms on a 256 x 384 tensor here against 0.06 ms for ``LayerNormalization``. Since activations
are quantized per call, the int8 graph encodes each text alone: a vector never depends on its
batch-mates, and with no padding at all this was faster than batches. ``quantize="none"`` is fp32,
in length-sorted batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

QUANTIZE = ("none", "int8")
RECIPE = 6  # bump when fusing or quantize_int8 changes, so cached graphs of an older recipe are not reused
# 2: SkipLayerNorm fused, early down-projections whole in fp32; 3: their outlier channels split off
# (both kept for the benchmark's before/after); 4: 3 + unmasked flash attention, split at the up-projection;
# 5: 4 + tanh GELU (FastGelu) and the outlier columns of the up-projections in int8 too;
# 6: 5 + biases in the int8 GEMMs (Q/K/V, GELU, split down-projections) and plain embedding ops
RECIPES = (2, 3, 4, 5, 6)
# the fp32 fused graph each recipe starts from (4 to 6 change only the int8 graph)
FUSED_RECIPE = {2: 2, 3: 3, 4: 3, 5: 3, 6: 3}
UNFUSED = ["SkipLayerNormFusion"]  # ORT's own fusions not applied to a recipe-3 graph (slower here)
# a text longer than window x chars is cut before tokenizing; a cut that fills fewer pieces than the
# window is retried at the next width, then whole. 6 then 24: 0.48 ms/doc on the real corpus against
# 0.66 for one cut at 8 (1 of 400 retried); one cut at 5 retried 16, at 4 retried 171 (RESULTS.md)
CUT_CHARS_PER_TOKEN = (6, 24)
_EXPORT_LOCK = threading.Lock()
log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where exported graphs live: ``$REFINERY_MODEL_CACHE`` or ``~/.cache/refinery/onnx``."""
    env = os.environ.get("REFINERY_MODEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "refinery" / "onnx"


def model_fingerprint(path: Path) -> str:
    """A hash of the model directory's files (names, sizes and the config's bytes): a changed model
    gets a new export instead of a stale one."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and ".git" not in p.parts):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(str(file.stat().st_size).encode())
        if file.suffix == ".json":
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def max_seq_length(path: Path) -> int:
    """The word-piece window sentence-transformers uses for this model (its own config first)."""
    config = path / "sentence_bert_config.json"
    if config.exists():
        value = json.loads(config.read_text()).get("max_seq_length")
        if value:
            return int(value)
    return int(json.loads((path / "config.json").read_text()).get("max_position_embeddings", 512))


def _check_pooling(path: Path) -> None:
    """This path implements mean pooling then L2 normalisation; refuse a model that says otherwise."""
    modules = path / "modules.json"
    if not modules.exists():
        return
    kinds = [m.get("type", "") for m in json.loads(modules.read_text())]
    pooling = path / "1_Pooling" / "config.json"
    if pooling.exists():
        cfg = json.loads(pooling.read_text())
        if not cfg.get("pooling_mode_mean_tokens", False) or any(
            cfg.get(k, False) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens")
        ):
            raise ValueError(f"{path}: the ONNX path implements mean pooling only; use backend='torch'")
    unknown = [k for k in kinds if not k.endswith(("Transformer", "Pooling", "Normalize"))]
    if unknown:
        raise ValueError(
            f"{path}: modules {unknown} are not implemented by the ONNX path; use backend='torch'"
        )


def export_onnx(path: Path, target: Path) -> Path:
    """Export the model's transformer (token ids, mask, type ids -> last hidden state) to ``target``.

    Uses torch's TorchScript-based exporter (no onnxscript needed); written to a temporary name and
    renamed, so a concurrent reader never sees half a file."""
    import torch
    from transformers import AutoModel

    class Hidden(torch.nn.Module):
        """The transformer with positional inputs and one output, as the exporter wants."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = AutoModel.from_pretrained(
                str(path), local_files_only=True, attn_implementation="eager"
            )

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    model = Hidden().eval()
    ids = torch.ones((2, 8), dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"last_hidden_state": {0: "batch", 1: "tokens"}}
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(temp),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    os.replace(temp, target)
    return target


def sensitive_matmuls(graph: Any) -> list[str]:
    """The MatMuls kept in fp32: the feed-forward down-projections of the first half of the layers.

    Measured on real text (benchmarks/bench_embeddings.py): quantizing every weight MatMul leaves some
    documents at cosine 0.984 with fp32; those projections carry the outlier activations of the early
    layers, and keeping them in fp32 lifts the worst document above 0.99 for ~15% of the speed-up."""
    found = []
    for node in graph.node:
        match = re.search(r"layer\.(\d+)/output/dense/MatMul$", node.name)
        if node.op_type == "MatMul" and match:
            found.append((int(match.group(1)), node.name))
    layers = 1 + max((layer for layer, _ in found), default=-1)
    return [name for layer, name in found if layer < (layers + 1) // 2]


def calibration_feeds(path: Path) -> list[dict[str, np.ndarray]]:
    """Model inputs for the fixed calibration texts (:func:`onnx_outliers.calibration_texts`)."""
    from tokenizers import Tokenizer

    from refinery.models.onnx_outliers import calibration_texts

    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.enable_truncation(max_seq_length(path))
    tokenizer.no_padding()
    feeds = []
    for enc in tokenizer.encode_batch(calibration_texts(path)):
        ids = np.array([enc.ids], dtype=np.int64)
        feeds.append(
            {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        )
    return feeds


def quantize_int8(source: Path, target: Path, model_dir: Path | None = None, recipe: int = RECIPE) -> Path:
    """ORT dynamic quantization: int8 per-channel weights of the weight MatMuls and of the fused
    attention's projection (not the products of two activations), activations quantized per call.
    Recipe 3 first splits the early down-projections' outlier channels into fp32 MatMuls
    (:func:`onnx_outliers.split_outlier_channels`, calibrated on texts from ``model_dir``); recipe 2
    keeps those projections whole in fp32. Recipe 4 also rewrites the fused attention as Q/K/V
    MatMuls and an unmasked ``MultiHeadAttention`` (:mod:`refinery.models.onnx_attention`; valid
    because the int8 graph encodes each text alone) and splits at the up-projection. Recipe 5 also
    uses the tanh GELU (:func:`onnx_gelu.tanh_gelu`) and quantizes the outlier columns of the
    up-projections: their input is the layer norm's output, which the ordinary columns quantize
    anyway; only the outliers' down-projections, whose inputs hold the large values, stay fp32.
    Recipe 6 also moves biases into the int8 GEMMs (:mod:`refinery.models.onnx_bias`, and the Q/K/V
    biases out of ``MultiHeadAttention``) and writes the embedding layer as plain ops with token type
    0 folded in (:mod:`refinery.models.onnx_embed`): the graph reads only ``input_ids``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from refinery.models.onnx_attention import attention_to_unmasked_mha
    from refinery.models.onnx_bias import bias_into_matmuls
    from refinery.models.onnx_embed import unfuse_embeddings
    from refinery.models.onnx_gelu import tanh_gelu
    from refinery.models.onnx_outliers import split_outlier_channels

    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    split = target.with_name(f".{target.name}.{os.getpid()}.split.onnx")
    if recipe >= 3 and model_dir is not None:
        model = onnx.load(str(source))
        if recipe >= 4:  # the int8 graph runs one text at a time: no mask, ORT's flash attention
            attention_to_unmasked_mha(model, bias_in_matmuls=recipe >= 6)
        keep = split_outlier_channels(model, calibration_feeds(model_dir), split_up=recipe >= 4)
        if recipe >= 5:  # the up-projection's outlier columns read the layer norm: int8 keeps them
            keep = [name for name in keep if not name.endswith("_outlier_up")]
            tanh_gelu(model)
        if recipe >= 6:  # biases added by the int8 GEMMs, not by passes of their own; plain embeddings
            bias_into_matmuls(model)
            unfuse_embeddings(model, zero_token_types=True)
        onnx.save(model, str(split))
        source = split
    else:
        keep = sensitive_matmuls(onnx.load(str(source), load_external_data=False).graph)
    # the fused graph holds contrib ops (Attention, BiasGelu) that ONNX's shape
    # inference does not type: their outputs are float32
    quantize_dynamic(
        str(source),
        str(temp),
        op_types_to_quantize=["MatMul", "Attention"],
        per_channel=True,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=keep,
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    split.unlink(missing_ok=True)
    os.replace(temp, target)
    return target


def fuse_transformer(source: Path, target: Path, config: dict, recipe: int = RECIPE) -> Path:
    """ORT's transformer optimizer: attention, embedding + layer norm, bias + GELU and skip + layer norm
    fused into single kernels (measured 1.12-1.15x on fp32, and the fused attention's projection can
    then be quantized). A graph it cannot fuse (another architecture) is kept as exported."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    if recipe >= 3:  # residual add + LayerNormalization measured ~9x faster than SkipLayerNormalization
        options.enable_skip_layer_norm = False
        options.enable_bias_skip_layer_norm = False
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fused = optimizer.optimize_model(
            str(source),
            model_type="bert",
            num_heads=int(config.get("num_attention_heads", 0)),
            hidden_size=int(config.get("hidden_size", 0)),
            opt_level=1,
            optimization_options=options,
        )
        fused.save_model_to_file(str(temp))
    except Exception as err:  # an unfusable graph still runs, unfused: say so, do not fail
        log.warning(f"ORT's transformer optimizer could not fuse {source} ({err}); using the unfused graph")
        shutil.copyfile(source, temp)
    os.replace(temp, target)
    return target


def onnx_graph(path: Path, quantize: str = "none", recipe: int = RECIPE) -> Path:
    """The cached ONNX graph of the model at ``path`` (exported, fused, quantized on first use).
    ``recipe`` other than the current one exists for the benchmark's before/after."""
    if quantize not in QUANTIZE:
        raise ValueError(f"unknown quantize {quantize!r}; choose one of {QUANTIZE}")
    if recipe not in RECIPES:
        raise ValueError(f"unknown graph recipe {recipe!r}; choose one of {RECIPES}")
    folder = cache_root() / f"{path.name}-{model_fingerprint(path)}"
    exported = folder / "model.onnx"
    fused = folder / f"model.fused-v{FUSED_RECIPE[recipe]}.onnx"
    wanted = fused if quantize == "none" else folder / f"model.int8-v{recipe}.onnx"
    with _EXPORT_LOCK:
        if not exported.exists():
            export_onnx(path, exported)
        if not fused.exists():
            fuse_transformer(exported, fused, json.loads((path / "config.json").read_text()), recipe)
        if not wanted.exists():
            quantize_int8(fused, wanted, path, recipe)
    return wanted


def _cut_at_space(text: str, limit: int) -> str:
    """``text`` up to the last whitespace before ``limit`` characters (whole when it is shorter, or
    when no whitespace is found, since a cut inside a word would change its pieces)."""
    if len(text) <= limit:
        return text
    for at in range(limit, max(0, limit - 2_000), -1):
        if text[at] in " \t\n\r":  # what the BERT normaliser and pre-tokenizer split at
            return text[:at]
    return text


@dataclass
class OnnxEmbedder:
    """Same contract as :class:`refinery.models.embedder.Embedder` (``name``, ``dim``, ``encode``),
    so stages, semantic dedup and search take either. Safe to hold for the life of a process (an MCP
    server): each ``encode`` is independent."""

    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer
    name: str
    dim: int
    batch_size: int
    max_tokens: int
    quantize: str = "none"
    device: str = "cpu"
    backend: str = "onnx"
    workers: int = 1  # int8: texts encoded at once, each by a one-thread run of the shared session
    _inputs: tuple[str, ...] = field(default=())

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Unit vectors, one per text, in the order given (batches are formed by token length)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # int8 quantizes activations per call: in a batch a vector would depend on its batch-mates
        # (and their padding), so each text runs alone, which is also faster on CPU (RESULTS.md).
        size = 1 if self.quantize == "int8" else (batch_size or self.batch_size)
        encodings = self.tokenize(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(order), size)

        def run(start: int) -> None:
            chosen = order[start : start + size]
            out[chosen] = self._encode_batch([encodings[i] for i in chosen], int(lengths[chosen].max()))

        if self.workers > 1 and size == 1 and len(order) > 1:
            # ORT's run releases the GIL and a session may be run from several threads at once:
            # one-thread runs side by side cost half the CPU per text of one run on two intra-op
            # threads, which wait on each other inside every kernel (RESULTS.md, recipe 4)
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(self.workers, len(order))) as pool:
                list(pool.map(run, starts))
        else:
            for start in starts:
                run(start)
        return out

    def tokenize(self, texts: list[str]) -> list:
        """Word pieces of each text, truncated to the model's window, as the full text would give.

        A 200 kB manual page is read for its first 256 word pieces, yet tokenizing it whole costs
        milliseconds: each long text is first cut at a whitespace after ``CUT_CHARS_PER_TOKEN[0]``
        chars per token of the window. The tokenizer's normaliser works per character and its
        pre-tokenizer splits at whitespace, so a cut there leaves the pieces before it unchanged; a
        cut text that then fills fewer pieces than the window is tokenized again from a wider cut,
        and at last whole (exact)."""
        whole = [str(t) for t in texts]
        encodings: list = [None] * len(whole)
        pending = list(range(len(whole)))
        for chars in (*CUT_CHARS_PER_TOKEN, None):
            cut = [
                whole[i] if chars is None else _cut_at_space(whole[i], self.max_tokens * chars)
                for i in pending
            ]
            retry = []
            for i, text, enc in zip(pending, cut, self._encode_texts(cut), strict=True):
                encodings[i] = enc
                if len(enc.ids) < self.max_tokens and len(text) < len(whole[i]):
                    retry.append(i)
            pending = retry
            if not pending:
                break
        return encodings

    def _encode_texts(self, texts: list[str]) -> list:
        """The tokenizer's encodings of ``texts``. ``encode_batch_fast`` (tokenizers >= 0.20) skips the
        character offsets, which nothing here reads: the same ids in 0.38 against 0.48 ms per document
        of the real corpus (benchmarks/RESULTS.md, recipe 5)."""
        fast = getattr(self.tokenizer, "encode_batch_fast", None)
        return fast(texts) if fast is not None else self.tokenizer.encode_batch(texts)

    def _encode_batch(self, encodings: list, width: int) -> np.ndarray:
        if self.quantize == "int8" and len(encodings) > 1:  # its attention has no mask (recipe 4)
            raise ValueError("the int8 graph encodes one text per run; padded batches would change vectors")
        if len(encodings) == 1 and len(encodings[0].ids) == width:
            # one unpadded text (every int8 run): no mask to build, and the recipe-6 int8 graph reads
            # only the ids; mean pooling is the plain mean
            ids = np.array([encodings[0].ids], dtype=np.int64)
            feeds = {"input_ids": ids}
            for name in self._inputs:
                if name != "input_ids":
                    feeds[name] = np.ones_like(ids) if name == "attention_mask" else np.zeros_like(ids)
            pooled = self.session.run(None, feeds)[0].mean(axis=1)
        else:
            ids = np.zeros((len(encodings), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, enc in enumerate(encodings):
                ids[row, : len(enc.ids)] = enc.ids
                mask[row, : len(enc.ids)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


def load_onnx_embedder(
    path: Path,
    name: str,
    batch_size: int = 64,
    threads: int = 0,
    quantize: str = "none",
    recipe: int = RECIPE,
    spin: bool = True,
    parallel_texts: bool = True,
) -> OnnxEmbedder:
    """An :class:`OnnxEmbedder` over the cached graph of the model at ``path`` (exported if absent).

    ``threads`` (0: every usable core): for fp32, ORT's intra-op threads; for int8, which encodes
    one text per run, that many texts run side by side on one thread each (``parallel_texts``;
    ``False`` gives the int8 graph intra-op threads instead, for the benchmark's comparison).

    ``spin=False`` stops ORT's intra-op workers from busy-waiting between kernels (only matters with
    more than one thread; measured in benchmarks/bench_embeddings.py)."""
    _check_pooling(path)
    graph = onnx_graph(path, quantize, recipe)
    import onnxruntime as ort
    from tokenizers import Tokenizer

    threads = max(0, int(threads))
    workers = 1
    if quantize == "int8" and parallel_texts:  # one text per run: run texts side by side instead
        workers = threads or usable_cores()
        threads = 1
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # 0: ORT's default, one per physical core; in a Ray task or actor, the CPUs Ray assigned it
    options.intra_op_num_threads = threads or ray_assigned_cpus()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(graph),
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=UNFUSED if recipe >= 3 else None,
    )
    limit = max_seq_length(path)
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.enable_truncation(limit)
    tokenizer.no_padding()
    dim = int(json.loads((path / "config.json").read_text())["hidden_size"])
    inputs = tuple(i.name for i in session.get_inputs())
    return OnnxEmbedder(
        session, tokenizer, name, dim, batch_size, limit, quantize, workers=workers, _inputs=inputs
    )


def usable_cores() -> int:
    """CPUs this process may run on: its affinity mask (a container's limit), and in a Ray task or
    actor the CPUs Ray assigned it. Ray sets no affinity, so without the second a worker of one CPU
    ran as many threads as the node has cores, and two workers on one node each took every core."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        cores = max(1, os.cpu_count() or 1)
    assigned = ray_assigned_cpus()
    return min(cores, assigned) if assigned else cores


def ray_assigned_cpus() -> int:
    """The CPUs Ray assigned the task or actor running in this process, rounded up (0: not in a
    Ray task, e.g. the driver or a process without Ray). Never imports Ray."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return 0
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:  # the driver: no task, no assigned CPUs
        return 0
    cpus = context.get_assigned_resources().get("CPU", 0.0)
    return math.ceil(cpus) if cpus > 0 else 0
