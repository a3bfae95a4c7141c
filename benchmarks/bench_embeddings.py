"""Document embeddings on CPU: today's torch path against the ONNX Runtime path, on real text.

On the real corpus (benchmarks/real_corpus.py: Debian docs, man pages, CPython docstrings), the
first ``--docs`` documents are embedded by:

- ``torch``: sentence-transformers fp32, batches of 64 in document order (the path before this
  change, ``backend="torch"``) — the baseline, measured in the same run;
- ``onnx-fp32``: ONNX Runtime, full graph optimizations, batches formed by token length, texts cut
  before tokenizing (``quantize="none"``);
- ``onnx-int8-v3``: the int8 graph of the last wave (recipe 3: outlier channels of the early
  feed-forward down-projections split into a small fp32 MatMul, the rest int8; residual add +
  LayerNormalization unfused), one text per run;
- ``onnx-int8-v4``: the last wave's default (recipe 4: recipe 3 with the fused attention rewritten
  as Q/K/V MatMuls + an unmasked MultiHeadAttention, ORT's CPU flash-attention path, and the
  outlier split made at the up-projection instead of by a Split), one text per run;
- ``onnx-int8-v5``: the last session's default (recipe 5: recipe 4 with the tanh GELU, ``FastGelu``,
  and the outlier columns of the up-projections in int8; only the outliers' down-projections stay
  fp32), one text per run;
- ``onnx-int8``: the current default (recipe 6: recipe 5 with the biases added by the int8 GEMMs,
  not by passes of their own, and the embedding layer as plain ops; the graph reads only the ids),
  one text per run;
- ``onnx-int8-2t``: the same graph with two intra-op threads (its CPU seconds still count both
  cores, so docs per CPU-second says what a second thread adds per core), and ``onnx-int8-2t-nospin``
  with ORT's spinning workers off (``session.intra_op.allow_spinning=0``);
- ``onnx-int8-2w``: the default layout with ``threads=2``: two texts at a time, each run on one
  thread of the same session (docs per wall-second is its figure);
- ``onnx-int8-2s``: two separate one-thread sessions side by side, each encoding its own half of
  the documents (alternate documents, so both halves hold long and short texts).

Each backend encodes all documents ``--repeats`` times (the backends take turns each round, so a
change in the machine's load hits them alike); the figure is the median round.

Each other backend runs with one intra-op thread (torch.set_num_threads(1) / ORT intra_op_num_threads=1), so
documents per CPU-second is a per-core rate; CPU seconds are the process's (``time.process_time``),
which a busy machine inflates less than wall time. Reported per backend: docs per CPU-second, its
ratio to torch, the cosine of each document's vector with torch's (min, 1st percentile, mean, and
how many fall under 0.99), SemDeDup's removals (refinery.dedup.semantic.plan, default params) with
the documents whose decision differs from torch's, and recall@10 of brute-force search with
``--queries`` queries (the first line of other documents) against torch's top 10.

    .venv/bin/python -m benchmarks.bench_embeddings --docs 400
"""

from __future__ import annotations

import argparse
import json
import os
import time

for _flag in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_flag, "1")

import numpy as np  # noqa: E402

from benchmarks.real_corpus import ensure_real_corpus  # noqa: E402


def real_texts(docs: int, max_mb: float) -> tuple[list[str], list[str]]:
    corpus = ensure_real_corpus(max_mb=max_mb)
    ids, texts = [], []
    for batch in corpus.iter_batches(columns=["id", "text"]):
        ids += batch.column("id").to_pylist()
        texts += batch.column("text").to_pylist()
        if len(texts) >= docs:
            break
    return ids[:docs], texts[:docs]


def first_line(text: str) -> str:
    """A query: the first non-blank line of a held-out document (a title, a NAME line), at most 200 chars."""
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), text[:80])[:200]


def timed(encode, texts: list[str]) -> tuple[np.ndarray, float, float]:
    encode(texts[:4])  # warm-up: first-call allocations are not the steady state
    cpu, wall = time.process_time(), time.perf_counter()
    vectors = encode(texts)
    return vectors, time.process_time() - cpu, time.perf_counter() - wall


class TwoSessions:
    """Two one-thread int8 embedders (separate ORT sessions) side by side, each on its own half."""

    def __init__(self, first, second) -> None:
        self.halves = (first, second)

    def encode(self, texts: list[str]) -> np.ndarray:
        from concurrent.futures import ThreadPoolExecutor

        parts = (texts[0::2], texts[1::2])
        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda pair: pair[0].encode(pair[1]), zip(self.halves, parts, strict=True)))
        out = np.empty((len(texts), done[0].shape[1]), dtype=np.float32)
        out[0::2], out[1::2] = done
        return out


def semdedup(ids: list[str], vectors: np.ndarray) -> set[str]:
    from refinery.dedup.semantic import Claims, SemanticDedupParams, plan

    decided = plan("bench", ids, vectors, Claims(), SemanticDedupParams())
    return {key for key, d in decided.decisions.items() if d.duplicate}


def top10(queries: np.ndarray, docs: np.ndarray) -> np.ndarray:
    return np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :10]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--max-mb", type=float, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the median round is reported")
    parser.add_argument(
        "--backends",
        help="comma-separated subset to run (the torch baseline always runs first; onnx-int8 always runs)",
    )
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from refinery.models.embedder import DEFAULT_MODEL, load_embedder

    ids, texts = real_texts(args.docs + args.queries, args.max_mb)
    query_texts = [
        next((ln.strip() for ln in t.splitlines() if ln.strip()), t[:80])[:200] for t in texts[args.docs :]
    ]
    ids, texts = ids[: args.docs], texts[: args.docs]
    print(f"{len(texts)} real documents, {sum(map(len, texts)) / 1e6:.2f} MB; {len(query_texts)} queries")
    load1 = os.getloadavg()[0]

    from refinery.models.embedder import resolve_model_path
    from refinery.models.onnx_embedder import load_onnx_embedder

    path = resolve_model_path(DEFAULT_MODEL)
    factories = {  # built only when chosen: each int8 recipe builds its graph on first use
        "torch": lambda: load_embedder(DEFAULT_MODEL, "cpu", 64, True, backend="torch"),
        "onnx-fp32": lambda: load_embedder(DEFAULT_MODEL, "cpu", 64, True, "onnx", "none", 1),
        "onnx-int8-v3": lambda: load_onnx_embedder(path, DEFAULT_MODEL, 64, 1, "int8", recipe=3),
        "onnx-int8-v4": lambda: load_onnx_embedder(path, DEFAULT_MODEL, 64, 1, "int8", recipe=4),
        "onnx-int8-v5": lambda: load_onnx_embedder(path, DEFAULT_MODEL, 64, 1, "int8", recipe=5),
        "onnx-int8": lambda: load_embedder(DEFAULT_MODEL, "cpu", 64, True, "onnx", "int8", 1),
        "onnx-int8-2t": lambda: load_onnx_embedder(path, DEFAULT_MODEL, 64, 2, "int8", parallel_texts=False),
        "onnx-int8-2t-nospin": lambda: load_onnx_embedder(
            path, DEFAULT_MODEL, 64, 2, "int8", spin=False, parallel_texts=False
        ),
        "onnx-int8-2w": lambda: load_onnx_embedder(path, DEFAULT_MODEL, 64, 2, "int8"),
        "onnx-int8-2s": lambda: TwoSessions(
            load_onnx_embedder(path, DEFAULT_MODEL, 64, 1, "int8"),
            load_onnx_embedder(path, DEFAULT_MODEL, 64, 1, "int8"),
        ),
    }
    wanted = {"torch", "onnx-int8", *args.backends.split(",")} if args.backends else set(factories)
    backends = {name: make() for name, make in factories.items() if name in wanted}
    tokenizer = backends["onnx-int8"]
    tokenizer.tokenize(texts[:4])
    cpu = time.process_time()
    encodings = tokenizer.tokenize(texts)
    tokenize_cpu = time.process_time() - cpu
    lengths = np.array([len(e.ids) for e in encodings])
    print(
        f"tokenizing (cut at a space, then exact): {tokenize_cpu / len(texts) * 1e3:.2f} ms/doc CPU; "
        f"word pieces per doc: mean {lengths.mean():.1f}, "
        f"{np.mean(lengths == lengths.max()):.0%} at the window"
    )
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in backends}
    vectors_of: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for name, embedder in backends.items():
            vectors, cpu, wall = timed(embedder.encode, texts)
            rounds[name].append((cpu, wall))
            vectors_of[name] = vectors
    results: dict[str, dict] = {}
    base = base_removed = base_top = None
    for name, embedder in backends.items():
        vectors = vectors_of[name]
        cpu = float(np.median([c for c, _ in rounds[name]]))
        wall = float(np.median([w for _, w in rounds[name]]))
        queries = embedder.encode(query_texts)
        removed = semdedup(ids, vectors)
        top = top10(queries, vectors)
        if base is None:
            base, base_removed, base_top, base_cpu = vectors, removed, top, cpu
        cos = (vectors * base).sum(axis=1)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, base_top, strict=True)]))
        results[name] = {
            "docs_per_cpu_s": len(texts) / cpu,
            "docs_per_cpu_s_rounds": [len(texts) / c for c, _ in rounds[name]],
            "ms_per_doc_cpu": cpu / len(texts) * 1e3,
            "docs_per_wall_s": len(texts) / wall,
            "speedup_cpu": base_cpu / cpu,
            "speedup_cpu_rounds": [
                t / c for (t, _), (c, _) in zip(rounds["torch"], rounds[name], strict=True)
            ],
            "cos_min": float(cos.min()),
            "cos_p1": float(np.percentile(cos, 1)),
            "cos_mean": float(cos.mean()),
            "under_0_99": int((cos < 0.99).sum()),
            "semdedup_removed": len(removed),
            "semdedup_only_here": sorted(removed - base_removed),
            "semdedup_only_torch": sorted(base_removed - removed),
            "recall_at_10_vs_torch": recall,
        }
        r = results[name]
        print(
            f"{name:10s} {r['docs_per_cpu_s']:7.1f} docs/CPU-s ({r['speedup_cpu']:.2f}x torch; rounds "
            f"{', '.join(f'{x:.1f}' for x in r['docs_per_cpu_s_rounds'])}), "
            f"{r['docs_per_wall_s']:6.1f} docs/wall-s | cosine vs torch min {r['cos_min']:.4f} "
            f"p1 {r['cos_p1']:.4f} mean {r['cos_mean']:.4f}, {r['under_0_99']} under 0.99 | SemDeDup removes "
            f"{r['semdedup_removed']} (+{len(r['semdedup_only_here'])} / "
            f"-{len(r['semdedup_only_torch'])} vs torch) "
            f"| recall@10 vs torch {recall:.3f}",
            flush=True,
        )
        for key in r["semdedup_only_here"] + r["semdedup_only_torch"]:
            print(f"    decision differs: {key}")
    load2 = os.getloadavg()[0]
    print(f"1-minute load average: {load1:.2f} at start, {load2:.2f} at end ({os.cpu_count()} CPUs)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "docs": len(texts),
                    "load": [load1, load2],
                    "tokenize_ms_per_doc": tokenize_cpu / len(texts) * 1e3,
                    "mean_pieces": float(lengths.mean()),
                    "results": results,
                },
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
