"""Perplexity buckets from the quantile sketch against exact percentiles: how many decisions move.

``perplexity_scored`` (bucket_reference 'corpus') cuts each partition at p30/p60 of its own
perplexities. It takes the cut-offs from a mergeable quantile sketch (:mod:`refinery.quantiles`),
so workers never send their scores to the step. This measures what that costs in decisions, on the
bundled text sample (each source a partition, as the stage cuts it) and on real text
(``benchmarks/real_corpus.py``), for three sketch accuracies:

- the cut-offs' relative distance from ``numpy.percentile`` (bounded by the accuracy);
- documents whose bucket differs from the exact cut's (only documents between the two cut-offs can);
- that merging per-slice sketches (slices of ``--slice-rows``, merged in shuffled order) gives the
  very same cut-offs as one sketch over the partition (what makes the Ray and local engines agree);
- the sketch's size, and the time to build it against the time to score.

    .venv/bin/python -m benchmarks.bench_cutoff_sketch --real-mb 8
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np

ACCURACIES = (0.001, 0.005, 0.01)


def bundled_partitions(temp: Path) -> dict[str, list[str]]:
    """The bundled sample's sources as the ingest reads them (one partition each)."""
    from refinery.ingest.text_reader import SourceReader
    from refinery.sample.text_sample import build_text_sample

    inbox = temp / "inbox"
    build_text_sample(inbox)
    out = {}
    for folder in sorted(p for p in inbox.iterdir() if p.is_dir()):
        reader = SourceReader(folder, folder.name)
        out[folder.name] = [d["text"] for b in reader.batches() for d in b.documents if d.get("text")]
    return out


def real_partition(max_mb: float) -> dict[str, list[str]]:
    from benchmarks.real_corpus import ensure_real_corpus

    corpus = ensure_real_corpus(max_mb=max_mb)
    texts = [t for b in corpus.iter_batches(columns=["text"]) for t in b.column("text").to_pylist()]
    return {f"real ({corpus.describe().splitlines()[0][:60]})": texts}


def measure(name: str, perplexities: np.ndarray, slice_rows: int, percentiles=(30.0, 60.0)) -> list[dict]:
    from refinery.quality.perplexity import bucket_of
    from refinery.quantiles import QuantileSketch

    finite = perplexities[np.isfinite(perplexities)]
    exact = tuple(float(v) for v in np.percentile(finite, percentiles))
    exact_buckets = [bucket_of(p, exact) for p in finite]
    rows = []
    for accuracy in ACCURACIES:
        started = time.perf_counter()
        whole = QuantileSketch.of(finite, accuracy)
        build_s = time.perf_counter() - started
        cut = tuple(whole.percentiles(percentiles))
        parts = [
            QuantileSketch.of(finite[i : i + slice_rows], accuracy) for i in range(0, len(finite), slice_rows)
        ]
        random.Random(1).shuffle(parts)
        merged = QuantileSketch.merged(parts, accuracy)
        changed = sum(bucket_of(p, cut) != b for p, b in zip(finite, exact_buckets, strict=True))
        rows.append(
            {
                "partition": name,
                "documents": len(finite),
                "accuracy": accuracy,
                "exact_cutoffs": [round(v, 3) for v in exact],
                "sketch_cutoffs": [round(v, 3) for v in cut],
                "max_relative_error": max(abs(c - e) / e for c, e in zip(cut, exact, strict=True)),
                "decisions_changed": changed,
                "share_changed": changed / len(finite),
                "merged_equals_whole": merged.percentiles(percentiles) == list(cut),
                "slices": len(parts),
                "buckets": whole.buckets,
                "json_bytes": len(json.dumps(whole.to_dict())),
                "sketch_us_per_doc": 1e6 * build_s / len(finite),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--real-mb", type=float, default=8.0, help="real text to build or reuse (0: skip)")
    parser.add_argument("--slice-rows", type=int, default=500)
    args = parser.parse_args()

    from refinery.paths import Layout
    from refinery.quality.perplexity import PerplexityParams, PerplexityScorer
    from refinery.quality.reference import ReferenceLMParams, train_reference_lm
    from refinery.sample.reference_sample import build_reference_sample
    from resources.kenlm import KenLMResource

    with tempfile.TemporaryDirectory(prefix="bench-sketch-") as temp:
        layout = Layout.at(Path(temp) / "home")
        build_reference_sample(layout.inbox_kind("reference"))
        train_reference_lm(layout, ReferenceLMParams(), order=5)
        scorer = PerplexityScorer.uncut(KenLMResource().load(layout), PerplexityParams())
        partitions = bundled_partitions(Path(temp))
        if args.real_mb:
            partitions.update(real_partition(args.real_mb))
        results = []
        for name, texts in partitions.items():
            started = time.perf_counter()
            ppl = np.asarray([scorer.score(t)[0] for t in texts], dtype=np.float64)
            score_us = 1e6 * (time.perf_counter() - started) / max(1, len(texts))
            for row in measure(name, ppl, args.slice_rows):
                row["score_us_per_doc"] = score_us
                results.append(row)
                print(
                    f"{name[:40]:40s} n={row['documents']:6d} α={row['accuracy']:<6g} cut exact "
                    f"{row['exact_cutoffs']} sketch {row['sketch_cutoffs']} (max rel err "
                    f"{row['max_relative_error']:.4%}) changed {row['decisions_changed']} "
                    f"({row['share_changed']:.3%}); merged==whole {row['merged_equals_whole']} over "
                    f"{row['slices']} slices; {row['buckets']} buckets, {row['json_bytes']} B JSON; sketch "
                    f"{row['sketch_us_per_doc']:.2f} µs/doc vs scoring {score_us:.0f} µs/doc"
                )
        out = Path("benchmarks/out")
        out.mkdir(parents=True, exist_ok=True)
        (out / "cutoff_sketch.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
