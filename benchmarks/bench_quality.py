"""Model-based quality stages: throughput of our scorers against the bare model loop, and memory.

Builds everything in a temporary home, in the same run: the bundled reference corpus, a 5-gram
KenLM model trained by lmplz on it (``scripts/build_kenlm.sh`` must have run), ``--docs`` web-like
documents (seeded prose and junk from refinery.sample.prose), and the quality classifier. Then:

- perplexity: ``PerplexityScorer`` over DataFrame batches (what ``perplexity_scored`` runs:
  normalization, scoring, buckets, paragraph detail, reasons) against a bare loop over the same
  texts, tokenization included: ``normalize_line`` per line, ``kenlm.Model.score`` and the CCNet
  formula, nothing else. The ratio bare/ours is our overhead (target: ours ≥ 1/1.2 of the bare
  loop's documents/s, i.e. overhead ≤ 1.2x). Best of ``--repeat`` runs each;
- perplexity_scored end to end through ``run_stage`` (Parquet read and write included), for scale;
- classifier: training time, and ``QualityScorer`` documents/s (feature hashing included);
- embeddings: all-MiniLM-L6-v2 documents/s on CPU (``--embed-docs`` documents), and on CUDA
  when torch sees a GPU;
- peak RSS of the process after each phase.

    .venv/bin/python -m benchmarks.bench_quality --docs 20000 --embed-docs 500
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.harness import peak_rss_mb


def web_like(n: int, seed: int) -> list[str]:
    """Mostly articles, with the junk a crawl carries (boilerplate, spam, lists, stubs)."""
    from refinery.sample import prose

    rng = random.Random(seed)
    junk = [prose.boilerplate_page, prose.keyword_spam, prose.bullet_dump, prose.short_stub]
    return [prose.article(rng) if rng.random() < 0.8 else rng.choice(junk)(rng) for _ in range(n)]


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_perplexity(layout, texts: list[str], repeat: int, batch_rows: int) -> dict:
    from refinery.quality.normalize import normalize_line
    from refinery.quality.perplexity import PerplexityParams, PerplexityScorer
    from refinery.quality.reference import scoring_lm

    lm = scoring_lm(layout, "", 5)
    model = lm.lm.model
    cutoffs, _ = lm.cutoffs([33.0, 66.0])
    frames = [
        pd.DataFrame(
            {
                "id": [f"d{i}" for i in range(s, min(s + batch_rows, len(texts)))],
                "text": texts[s : s + batch_rows],
            }
        )
        for s in range(0, len(texts), batch_rows)
    ]

    def bare() -> list[float]:
        score = model.score
        out = []
        for text in texts:
            total, tokens = 0.0, 0
            for raw in text.splitlines():
                line = normalize_line(raw)
                if line:
                    total += score(line, bos=True, eos=True)
                    tokens += len(line.split()) + 1
            out.append(10.0 ** (-total / tokens) if tokens else float("nan"))
        return out

    def ours() -> None:
        scorer = PerplexityScorer(model, PerplexityParams(), cutoffs)
        for frame in frames:
            scorer(frame)

    # Same numbers from both, or the comparison means nothing.
    check = PerplexityScorer(model, PerplexityParams(), cutoffs)(frames[0])
    reference = bare()[: len(frames[0])]
    ours_values = pd.concat([check.kept, check.rejected]).set_index("id").loc[frames[0]["id"], "perplexity"]
    assert all(
        abs(a - b) <= 1e-9 * max(1.0, abs(b)) for a, b in zip(ours_values, reference, strict=True) if a == a
    )
    bare_s, ours_s = best_of(repeat, bare), best_of(repeat, ours)
    return {
        "bare_docs_per_s": len(texts) / bare_s,
        "ours_docs_per_s": len(texts) / ours_s,
        "overhead": ours_s / bare_s,
    }


def bench_stage(layout, texts: list[str]) -> dict:
    from refinery.kernel.runner import run_stage
    from refinery.quality.perplexity import PERPLEXITY_FIELDS, PerplexityParams, PerplexityScorer
    from refinery.quality.reference import scoring_lm
    from refinery.schema import DOCUMENT_SCHEMA
    from refinery.storage import Storage

    storage = Storage(layout.storage)
    frame = pd.DataFrame(
        {
            "id": [f"d{i}" for i in range(len(texts))],
            "text": texts,
            "source": "bench",
            "url": None,
            "meta": None,
            "file": "bench.jsonl",
            "line": range(1, len(texts) + 1),
        }
    )
    path = storage.path("fuzzy_deduplicated", "bench")
    path.parent.mkdir(parents=True, exist_ok=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(frame, schema=DOCUMENT_SCHEMA, preserve_index=False), path)
    lm = scoring_lm(layout, "", 5)
    scorer = PerplexityScorer(lm.lm.model, PerplexityParams(), lm.cutoffs([33.0, 66.0])[0])
    run = run_stage(
        storage, "fuzzy_deduplicated", "perplexity_scored", "bench", scorer, PERPLEXITY_FIELDS, {}
    )
    return {"stage_docs_per_s": run.stats.rows_in / run.seconds, "stage_mb_per_s": run.mb_per_s}


def bench_classifier(layout, texts: list[str], repeat: int, batch_rows: int) -> dict:
    from refinery.quality.classifier import (
        ClassifierTrainParams,
        QualityClassifier,
        QualityParams,
        QualityScorer,
        train_classifier,
    )
    from refinery.quality.reference import read_reference

    corpus = read_reference(layout, "curated")
    positives = [(f"reference:{i}", t) for i, t in corpus.documents]
    negatives = [(f"bench/d{i}", t) for i, t in enumerate(texts[:5000])]
    started = time.perf_counter()
    trained = train_classifier(positives, negatives, ClassifierTrainParams())
    train_s = time.perf_counter() - started
    classifier = QualityClassifier.from_trained(trained)
    frames = [
        pd.DataFrame(
            {
                "id": [f"d{i}" for i in range(s, min(s + batch_rows, len(texts)))],
                "text": texts[s : s + batch_rows],
            }
        )
        for s in range(0, len(texts), batch_rows)
    ]
    cutoff, _ = QualityParams().cutoff(trained.metrics["reference_score_percentiles"])

    def score() -> None:
        scorer = QualityScorer(classifier, QualityParams(), "bench", cutoff)
        for frame in frames:
            scorer(frame)

    seconds = best_of(repeat, score)
    return {
        "train_seconds": train_s,
        "train_documents": len(positives) + len(negatives),
        "heldout_auc": trained.metrics["heldout_auc"],
        "score_docs_per_s": len(texts) / seconds,
    }


def bench_embeddings(texts: list[str], device: str, batch_size: int) -> dict:
    from refinery.models.embedder import load_embedder

    started = time.perf_counter()
    embedder = load_embedder("bundled:all-MiniLM-L6-v2", device, batch_size)
    load_s = time.perf_counter() - started
    embedder.encode(texts[:batch_size])  # warm-up
    started = time.perf_counter()
    embedder.encode(texts)
    seconds = time.perf_counter() - started
    return {"device": embedder.device, "load_seconds": load_s, "docs_per_s": len(texts) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=20_000, help="web-like documents to score")
    parser.add_argument("--embed-docs", type=int, default=500, help="documents to embed per device")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=5_000)
    parser.add_argument("--embed-batch", type=int, default=64)
    args = parser.parse_args()

    from refinery.paths import Layout
    from refinery.quality.reference import ReferenceLMParams, train_reference_lm
    from refinery.sample.reference_sample import build_reference_sample

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as temp:
        layout = Layout.at(Path(temp) / "home")
        build_reference_sample(layout.inbox_kind("reference"))
        started = time.perf_counter()
        lm = train_reference_lm(layout, ReferenceLMParams(), order=5)
        print(
            f"reference_lm: 5-gram on {lm.train_tokens:,} tokens in {time.perf_counter() - started:.2f}s "
            f"({lm.artifact.path.stat().st_size / 1e6:.1f} MB binary)"
        )
        texts = web_like(args.docs, seed=1)
        chars = sum(len(t) for t in texts)
        print(
            f"corpus: {len(texts):,} web-like documents, {chars / 1e6:.1f} M characters; "
            f"rss {peak_rss_mb():.0f} MB"
        )

        ppl = bench_perplexity(layout, texts, args.repeat, args.batch_rows)
        print(
            f"perplexity: bare kenlm loop {ppl['bare_docs_per_s']:,.0f} docs/s, our scorer "
            f"{ppl['ours_docs_per_s']:,.0f} docs/s: overhead {ppl['overhead']:.2f}x (target ≤ 1.20x); "
            f"peak rss {peak_rss_mb():.0f} MB"
        )
        stage = bench_stage(layout, texts)
        print(
            f"perplexity_scored via run_stage (Parquet in and out): {stage['stage_docs_per_s']:,.0f} docs/s, "
            f"{stage['stage_mb_per_s']:.1f} MB/s; peak rss {peak_rss_mb():.0f} MB"
        )
        clf = bench_classifier(layout, texts, args.repeat, args.batch_rows)
        print(
            f"classifier: trained on {clf['train_documents']:,} documents in {clf['train_seconds']:.1f}s "
            f"(out-of-fold AUC {clf['heldout_auc']:.3f}); scoring {clf['score_docs_per_s']:,.0f} docs/s; "
            f"peak rss {peak_rss_mb():.0f} MB"
        )
        sample = texts[: args.embed_docs]
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            emb = bench_embeddings(sample, device, args.embed_batch)
            print(
                f"embeddings ({emb['device']}): {emb['docs_per_s']:,.1f} docs/s over {len(sample)} documents "
                f"(batch {args.embed_batch}; model load {emb['load_seconds']:.1f}s); "
                f"peak rss {peak_rss_mb():.0f} MB"
            )
        if len(devices) == 1:
            print("embeddings (cuda): skipped, torch sees no GPU")


if __name__ == "__main__":
    main()
