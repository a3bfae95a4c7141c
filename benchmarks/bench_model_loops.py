"""perplexity_scored and quality_scored beside a bare loop of the same model, on real text.

The issue asks what the two model stages cost on top of their models: MB/s per core of

- **bare**: a loop calling the same model on the same documents and nothing else. Perplexity:
  ``normalize_line`` per line, ``kenlm.Model.score(line, bos, eos)``, CCNet's formula. Classifier:
  ``QualityClassifier.score(texts, keys)`` (hashed n-gram features, the fold's logits);
- **runner**: the library stage (``run_stage``: Parquet read, the stage's processor with its first
  pass, reasons, stats, Parquet write), as ``perplexity_scored`` / ``quality_scored`` build it;
- **dagster**: ``dg.materialize`` of the asset alone, in process, default config (resources, run
  storage, checks and metadata included).

Per core: UTF-8 megabytes of the documents over this process's CPU seconds (``time.process_time``:
user + system of every thread; OMP/MKL/torch held to one thread), best of ``--repeat``. The
documents are the real corpus (``benchmarks/real_corpus.py``: Debian docs, man pages, CPython
docstrings), written once as the upstream partitions (``fuzzy_deduplicated`` and
``perplexity_scored``'s input to quality) so every path reads the same rows. The models are
trained first through Dagster (reference_lm on the bundled reference sample, quality_classifier
against the same documents), not timed.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python -m benchmarks.bench_model_loops --real-mb 4
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

SOURCE = "bench"


def cpu_best(repeat: int, fn) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of the fastest of ``repeat`` calls (by CPU)."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        best = min(best, (time.process_time() - cpu, time.perf_counter() - wall))
    return best


def write_upstream(layout, texts: list[str]) -> None:
    """The documents as fuzzy_deduplicated[bench] and clean_documents[bench] (the classifier's
    negatives), in the pipeline's document schema."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refinery.schema import DOCUMENT_SCHEMA
    from refinery.storage import Storage

    frame = pd.DataFrame(
        {
            "id": [f"d{i}" for i in range(len(texts))],
            "text": texts,
            "source": SOURCE,
            "url": None,
            "meta": None,
            "file": "bench.jsonl",
            "line": range(1, len(texts) + 1),
        }
    )
    table = pa.Table.from_pandas(frame, schema=DOCUMENT_SCHEMA, preserve_index=False)
    storage = Storage(layout.storage)
    for asset in ("fuzzy_deduplicated", "clean_documents"):
        path = storage.path(asset, SOURCE)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=1000)


def materialize(assets, layout, instance, partition=None):
    import dagster as dg

    from resources import build_resources

    resources = build_resources("local", home=str(layout.home), device="cpu", batch_size=16)
    result = dg.materialize(assets, partition_key=partition, instance=instance, resources=resources)
    assert result.success
    return result


def normalize_line_before(line: str) -> str:
    """normalize_line as it was before this benchmark (one ``re.sub`` with a template for the
    punctuation split), to measure the change in the same run and check it gives the same tokens."""
    from refinery.quality import normalize as n

    line = line.strip().lower()
    if not line:
        return ""
    if not line.isascii():
        line = n._strip_accents(line).translate(n._PUNCT_TABLE)
    line = n._DIGIT.sub("0", line)
    line = line.translate(n._NON_PRINTING)
    line = n._SPLIT_PUNCT.sub(r" \1 ", line)
    return " ".join(line.split())


def bare_perplexity(model, texts: list[str], normalize_line=None) -> list[float]:
    if normalize_line is None:
        from refinery.quality.normalize import normalize_line

    score = model.score
    out = []
    for text in texts:
        total, tokens = 0.0, 0
        for raw in text.splitlines():
            line = normalize_line(raw)
            if line:
                total += score(line, bos=True, eos=True)
                tokens += line.count(" ") + 2
        out.append(10.0 ** (-total / tokens) if tokens else float("nan"))
    return out


def runner_perplexity(layout) -> None:
    from refinery.kernel.runner import run_stage
    from refinery.quality.perplexity import PERPLEXITY_FIELDS, PerplexityParams, PerplexityScorer
    from refinery.quality.reference import scoring_lm
    from refinery.storage import Storage

    storage = Storage(layout.storage)
    scoring = scoring_lm(layout, "", 5)

    def batches():
        columns = ["id", "text"]
        return storage.iter_batches("fuzzy_deduplicated", SOURCE, columns=columns)

    scorer = PerplexityScorer.for_model(scoring, PerplexityParams(), batches)
    run_stage(storage, "fuzzy_deduplicated", "perplexity_bench", SOURCE, scorer, PERPLEXITY_FIELDS, {})


def runner_quality(layout) -> None:
    from refinery.kernel.runner import run_stage
    from refinery.quality.classifier import QUALITY_FIELDS, QualityParams, QualityScorer
    from refinery.storage import Storage
    from resources.quality import QualityClassifierResource

    storage = Storage(layout.storage)
    classifier, info = QualityClassifierResource().load(layout)
    scorer = QualityScorer.for_model(classifier, info, QualityParams(), SOURCE)
    run_stage(storage, "perplexity_scored", "quality_bench", SOURCE, scorer, QUALITY_FIELDS, {})


def profile(fn, top: int = 12) -> str:
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--real-mb", type=float, default=4)
    parser.add_argument("--corpus-root", default=None, help="where real corpora are cached")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--limit-docs", type=int, default=None, help="first N documents (smoke runs)")
    parser.add_argument("--profile", action="store_true", help="cProfile the runner paths")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import dagster as dg

    from benchmarks.real_corpus import ensure_real_corpus
    from refinery.ids import doc_key
    from refinery.paths import Layout
    from refinery.quality.reference import scoring_lm
    from refinery.sample.reference_sample import build_reference_sample
    from refinery.storage import Storage

    kwargs = {"root": Path(args.corpus_root)} if args.corpus_root else {}
    corpus = ensure_real_corpus(args.real_mb, **kwargs)
    batches = corpus.iter_batches(columns=("text",), limit=args.limit_docs)
    texts = [t for b in batches for t in b.column("text").to_pylist()]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    out: dict = {
        "documents": len(texts),
        "mb": round(mb, 3),
        "uptime_before": Path("/proc/loadavg").read_text().strip(),
    }
    print(f"{len(texts)} real documents, {mb:.2f} MB; load {out['uptime_before']}")

    from assets import perplexity_scored, quality_classifier, quality_scored, reference_lm

    with (
        tempfile.TemporaryDirectory(prefix="refinery-model-loops-") as tmp,
        dg.instance_for_test() as instance,
    ):
        layout = Layout.at(Path(tmp) / "home")
        build_reference_sample(layout.inbox_kind("reference") / "curated")
        write_upstream(layout, texts)
        instance.add_dynamic_partitions("text_source", [SOURCE])
        materialize([reference_lm, quality_classifier], layout, instance)
        storage = Storage(layout.storage)

        # -- perplexity -------------------------------------------------------------------------
        model = scoring_lm(layout, "", 5).lm.model
        from refinery.quality.normalize import normalize_line

        lines = [line for t in texts for line in t.splitlines()]
        changed = sum(normalize_line(x) != normalize_line_before(x) for x in lines)
        assert changed == 0, f"{changed} lines normalize differently"
        before = cpu_best(args.repeat, lambda: bare_perplexity(model, texts, normalize_line_before))
        bare = cpu_best(args.repeat, lambda: bare_perplexity(model, texts))
        runner = cpu_best(args.repeat, lambda: runner_perplexity(layout))
        dagster = cpu_best(args.repeat, lambda: materialize([perplexity_scored], layout, instance, SOURCE))
        scored = storage.read("perplexity_scored", SOURCE)
        reference = dict(
            zip([f"d{i}" for i in range(len(texts))], bare_perplexity(model, texts), strict=True)
        )
        same = all(
            abs(p - reference[i]) <= 1e-9 * p for i, p in zip(scored["id"], scored["perplexity"], strict=True)
        )
        assert same, "the stage's perplexities differ from the bare loop's"
        out["perplexity"] = {
            k: {"cpu_s": v[0], "wall_s": v[1], "mb_per_s_per_core": mb / v[0]}
            for k, v in (("bare_before", before), ("bare", bare), ("runner", runner), ("dagster", dagster))
        }
        out["lines_compared"] = len(lines)

        # -- classifier ---------------------------------------------------------------------------
        from resources.quality import QualityClassifierResource

        classifier, _ = QualityClassifierResource().load(layout)
        kept = storage.read("perplexity_scored", SOURCE)[["id", "text"]]
        q_texts, keys = kept["text"].tolist(), [doc_key(SOURCE, i) for i in kept["id"]]
        q_mb = sum(len(t.encode()) for t in q_texts) / 1e6
        bare = cpu_best(args.repeat, lambda: classifier.score(q_texts, keys))
        runner = cpu_best(args.repeat, lambda: runner_quality(layout))
        dagster = cpu_best(args.repeat, lambda: materialize([quality_scored], layout, instance, SOURCE))
        got = storage.read("quality_scored", SOURCE)
        got = got.set_index("id").reindex(kept["id"])["quality_score"]
        expected = classifier.score(q_texts, keys)
        assert ((got.isna()) | ((got - expected).abs() < 1e-9)).all(), "scores differ from the bare loop's"
        out["classifier"] = {
            k: {"cpu_s": v[0], "wall_s": v[1], "mb_per_s_per_core": q_mb / v[0]}
            for k, v in (("bare", bare), ("runner", runner), ("dagster", dagster))
        }
        out["classifier"]["mb"] = round(q_mb, 3)
        if args.profile:
            out["profile_perplexity_runner"] = profile(lambda: runner_perplexity(layout))
            out["profile_quality_runner"] = profile(lambda: runner_quality(layout))
            out["profile_quality_dagster"] = profile(
                lambda: materialize([quality_scored], layout, instance, SOURCE)
            )
    out["uptime_after"] = Path("/proc/loadavg").read_text().strip()
    for stage in ("perplexity", "classifier"):
        base = out[stage]["bare"]["cpu_s"]
        for path in ("bare_before", "bare", "runner", "dagster"):
            if path not in out[stage]:
                continue
            r = out[stage][path]
            print(
                f"{stage:10} {path:8} {r['mb_per_s_per_core']:7.3f} MB/s per core  "
                f"{r['cpu_s']:7.2f} CPU s  {r['wall_s']:7.2f} wall s  x{r['cpu_s'] / base:.2f} of bare"
            )
    for key in ("profile_perplexity_runner", "profile_quality_runner", "profile_quality_dagster"):
        if key in out:
            print(f"--- {key}\n{out[key]}")
    print(f"load after: {out['uptime_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
