"""Text pipeline benchmark: our heuristic filters and fuzzy dedup next to datatrove and datasketch.

One generated corpus (``benchmarks/corpus.py``, reused if present), one run. Every component runs
alone in a fresh process (multiprocessing "spawn", numeric libraries pinned to one thread) and
reports documents/s and MB/s per core (UTF-8 bytes / CPU seconds of that process) and peak RSS
(VmHWM of that process, interpreter and imports included).

- ours: the heuristic chain (``refinery.filters.chain.filter_batch``, language gate off, since
  datatrove has none), MinHash signatures (``MinHasher(128, 5, seed=1).signatures``) and fuzzy
  dedup end to end (``FuzzyDeduper`` over a ``LocalFuzzyIndex``: signatures, LSH query and insert,
  verification). All stream the whole corpus in batches; the chain and the dedup are also run on
  the first 25% and 50% of it to show how peak RSS depends on corpus size.
- datatrove: ``GopherQualityFilter`` → ``GopherRepetitionFilter`` → ``C4QualityFilter`` with default
  parameters, a document removed by one not passed to the next; ``MinhashDedupSignature.run`` with
  5-grams and 16 buckets × 8 hashes (= 128) into a temporary folder.
- datasketch: per document ``MinHash(num_perm=128)`` and ``update_batch`` of its lowercased
  whitespace word 5-grams as UTF-8 bytes (and, as a faster variant, with shared permutations).

Baselines are slow, so they run on a deterministic uniform random subset of the corpus
(``--baseline-docs``); ours runs on that subset too, so both kinds of ratio are shown. Keep/remove
agreement with datatrove is measured on the subset.

    .venv/bin/python benchmarks/bench_text.py --docs 200000 --baseline-docs 20000

Results: a table on stdout, ``benchmarks/out/text_results.md`` (a section for RESULTS.md) and
``benchmarks/out/text_results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

try:
    from benchmarks.corpus import Corpus, ensure_corpus
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    from corpus import Corpus, ensure_corpus

OUT = Path(__file__).resolve().parent / "out"
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "RAYON_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
NUM_PERM, NGRAM, SEED = 128, 5, 1
TARGET_CHAIN, TARGET_MINHASH = 10.0, 3.0
PACKAGES = [
    "refinery",
    "numpy",
    "pandas",
    "pyarrow",
    "datasketch",
    "datatrove",
    "spacy",
    "nltk",
    "regex",
    "tokenizers",
    "xxhash",
]


# -- measuring inside a worker process ------------------------------------------------------------


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Meter:
    """CPU and wall seconds spent inside ``timed()``, and what went through it."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0
        self.docs = self.bytes = 0

    @contextmanager
    def timed(self):
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu += time.process_time() - c0
            self.wall += time.perf_counter() - w0

    def result(self, name: str, rss_setup_kb: int, **extra) -> dict:
        return {
            "name": name,
            "docs": self.docs,
            "bytes": self.bytes,
            "cpu_s": self.cpu,
            "wall_s": self.wall,
            "rss_setup_mb": rss_setup_kb / 1024,
            "peak_rss_mb": _proc_status_kb("VmHWM") / 1024,
            **extra,
        }


def _batch_bytes(batch: pa.RecordBatch) -> int:
    return int(pc.sum(pc.binary_length(batch.column("text"))).as_py() or 0)


def _source(corpus: Corpus, batch_size: int, limit: int | None, rows, columns=("id", "text")):
    if rows is not None:
        return corpus.take(np.asarray(rows), columns=columns, batch_size=batch_size)
    return corpus.iter_batches(batch_size, columns=columns, limit=limit)


LENGTH_EDGES = [1_000, 2_000, 4_000, 8_000, 16_000]  # bytes, for the article-length breakdown


def _length_bucket(size: int) -> int:
    """Index into LENGTH_EDGES of the first edge above ``size`` (len(LENGTH_EDGES) if none)."""
    return next((i for i, edge in enumerate(LENGTH_EDGES) if size < edge), len(LENGTH_EDGES))


def _bucket_label(i: int) -> str:
    lo = f"{LENGTH_EDGES[i - 1] / 1e3:g}" if i else "0"
    return f"≥ {lo} KB" if i == len(LENGTH_EDGES) else f"{lo}–{LENGTH_EDGES[i] / 1e3:g} KB"


def _warm_text() -> str:
    from refinery.sample import prose

    return prose.article(random.Random(7), paragraphs=3)


# -- our components -----------------------------------------------------------------------------


def ours_chain(corpus: Corpus, batch_size: int, limit=None, rows=None, decisions=False) -> dict:
    import pandas as pd

    from refinery.filters.chain import filter_batch
    from refinery.filters.params import HeuristicParams

    params = HeuristicParams(language_gate=False)
    filter_batch(pd.DataFrame({"id": ["warm"], "text": [_warm_text()]}), params)
    meter, reasons, reason_bytes, decided = Meter(), Counter(), Counter(), {}
    by_kind: Counter = Counter()  # (kind, reason or "kept") -> documents
    by_length: Counter = Counter()  # (length bucket of articles, "docs" | "removed") -> documents
    rss_setup = _proc_status_kb("VmRSS")
    for batch in _source(corpus, batch_size, limit, rows, columns=("id", "text", "kind")):
        frame = batch.to_pandas()
        kinds = dict(zip(frame["id"], frame.pop("kind"), strict=True))
        sizes = dict(zip(frame["id"], pc.binary_length(batch.column("text")).to_pylist(), strict=True))
        meter.docs += len(frame)
        meter.bytes += _batch_bytes(batch)
        with meter.timed():
            result = filter_batch(frame, params)
        verdicts = [
            *zip(result.rejected["id"].tolist(), result.rejected["reason"].tolist(), strict=True),
            *((doc_id, None) for doc_id in result.kept["id"].tolist()),
        ]
        for doc_id, reason in verdicts:
            kind, size = kinds[doc_id], sizes[doc_id]
            by_kind[kind, reason or "kept"] += 1
            if reason:
                reasons[reason] += 1
                reason_bytes[reason] += size
            if kind == "article":
                bucket = _length_bucket(size)
                by_length[bucket, "docs"] += 1
                by_length[bucket, "removed"] += reason is not None
            if decisions:
                decided[doc_id] = reason
    return meter.result(
        "ours_chain",
        rss_setup,
        reasons=dict(reasons),
        reason_bytes=dict(reason_bytes),
        kept=meter.docs - sum(reasons.values()),
        by_kind=[[k, r, n] for (k, r), n in sorted(by_kind.items())],
        article_length=[[b, what, n] for (b, what), n in sorted(by_length.items())],
        decisions=decided,
    )


def ours_minhash(corpus: Corpus, batch_size: int, limit=None, rows=None) -> dict:
    from refinery.dedup.minhash import MinHasher

    hasher = MinHasher(NUM_PERM, NGRAM, SEED)
    hasher.signatures([_warm_text()])
    meter, checksum = Meter(), 0
    rss_setup = _proc_status_kb("VmRSS")
    for batch in _source(corpus, batch_size, limit, rows):
        texts = batch.column("text").to_pylist()
        meter.docs += len(texts)
        meter.bytes += _batch_bytes(batch)
        with meter.timed():
            sigs = hasher.signatures(texts)
        checksum ^= int(np.bitwise_xor.reduce(sigs, axis=None))
    return meter.result("ours_minhash", rss_setup, checksum=checksum)


def ours_fuzzy(corpus: Corpus, batch_size: int, limit=None, rows=None) -> dict:
    from refinery.dedup.fuzzy import FuzzyDeduper, FuzzyDedupParams
    from refinery.dedup.lsh_index import LocalFuzzyIndex

    params = FuzzyDedupParams(num_perm=NUM_PERM, ngram=NGRAM, seed=SEED)
    removed: Counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        index = LocalFuzzyIndex(Path(tmp) / "fuzzy.pkl", params.index_params())
        deduper = FuzzyDeduper(index, "bench", params.threshold)
        meter, commit = Meter(), Meter()
        rss_setup = _proc_status_kb("VmRSS")
        for batch in _source(corpus, batch_size, limit, rows, columns=("id", "text", "kind")):
            frame = batch.to_pandas()
            meter.docs += len(frame)
            meter.bytes += _batch_bytes(batch)
            with meter.timed():
                result = deduper.process(frame)
            removed.update(result.rejected["kind"].tolist())
        entries = index.count()
        rss_before_commit = _proc_status_kb("VmRSS") / 1024
        with commit.timed():
            index.commit()
        pickle_mb = index.path.stat().st_size / 1e6
    return meter.result(
        "ours_fuzzy",
        rss_setup,
        removed_by_kind=dict(removed),
        removed=sum(removed.values()),
        index_entries=entries,
        index_pickle_mb=pickle_mb,
        rss_before_commit_mb=rss_before_commit,
        commit_cpu_s=commit.cpu,
        commit_wall_s=commit.wall,
    )


# -- baselines ----------------------------------------------------------------------------------


def _quiet_datatrove() -> None:
    from loguru import logger

    logger.remove()
    logger.disable("datatrove")


def datatrove_chain(corpus: Corpus, batch_size: int, rows) -> dict:
    _quiet_datatrove()
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.filters.base_filter import get_filter_result

    filters = [
        ("gopher_quality", GopherQualityFilter()),
        ("gopher_repetition", GopherRepetitionFilter()),
        ("c4", C4QualityFilter()),
    ]
    rss_before_spacy = _proc_status_kb("VmRSS") / 1024
    for _, f in filters:  # loads spaCy's blank English pipeline
        f.filter(Document(text=_warm_text(), id="warm"))
    meter = Meter()
    per_filter = {name: Meter() for name, _ in filters}
    decided, kinds, reasons, reason_bytes = {}, {}, Counter(), Counter()
    rss_setup = _proc_status_kb("VmRSS")
    for batch in _source(corpus, batch_size, None, rows, columns=("id", "text", "kind")):
        ids, texts, kind = (batch.column(c).to_pylist() for c in ("id", "text", "kind"))
        for doc_id, text, k in zip(ids, texts, kind, strict=True):
            doc = Document(text=text, id=doc_id)
            size = len(text.encode("utf-8"))
            meter.docs += 1
            meter.bytes += size
            verdict = None
            for name, f in filters:
                m = per_filter[name]
                m.docs += 1
                m.bytes += size
                with m.timed():
                    keep, reason = get_filter_result(f.filter(doc))
                if not keep:
                    verdict = f"{name}.{reason}"
                    break
            decided[doc_id], kinds[doc_id] = verdict, k
            if verdict:
                reasons[verdict] += 1
                reason_bytes[verdict] += size
    meter.cpu = sum(m.cpu for m in per_filter.values())
    meter.wall = sum(m.wall for m in per_filter.values())
    return meter.result(
        "datatrove_chain",
        rss_setup,
        per_filter={
            name: {"docs": m.docs, "bytes": m.bytes, "cpu_s": m.cpu, "wall_s": m.wall}
            for name, m in per_filter.items()
        },
        reasons=dict(reasons),
        reason_bytes=dict(reason_bytes),
        kept=meter.docs - sum(reasons.values()),
        decisions=decided,
        kinds=kinds,
        imported_torch="torch" in sys.modules,
        rss_before_spacy_mb=rss_before_spacy,
    )


def _fix_str_hashing(step) -> bool:
    """datatrove 0.10 passes ``str`` shingles to its xxhash functions, which xxhash >= 4 rejects
    ("Strings must be encoded before hashing"; xxhash 3 encoded them as UTF-8 itself). If that
    happens here, encode first, as xxhash 3 did, and say so in the report."""
    hash_func = step._hash_func
    try:
        hash_func("probe")
        return False
    except TypeError:
        step._hash_func = lambda s: hash_func(s.encode("utf-8"))
        return True


def datatrove_minhash(corpus: Corpus, batch_size: int, rows) -> dict:
    _quiet_datatrove()
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    config = MinhashConfig(n_grams=NGRAM, num_buckets=16, hashes_per_bucket=8, seed=SEED)
    assert config.num_buckets * config.hashes_per_bucket == NUM_PERM
    meter, reading = Meter(), Meter()

    def documents():
        # Streamed so the subset is never held in memory; the time spent here (Parquet decoding,
        # Document objects) is measured and taken out of the step's time.
        c0, w0 = time.process_time(), time.perf_counter()
        for batch in _source(corpus, batch_size, None, rows):
            ids, texts = batch.column("id").to_pylist(), batch.column("text").to_pylist()
            meter.docs += len(ids)
            meter.bytes += _batch_bytes(batch)
            for doc_id, text in zip(ids, texts, strict=True):
                doc = Document(text=text, id=doc_id)
                reading.cpu += time.process_time() - c0
                reading.wall += time.perf_counter() - w0
                yield doc
                c0, w0 = time.process_time(), time.perf_counter()
        reading.cpu += time.process_time() - c0
        reading.wall += time.perf_counter() - w0

    with tempfile.TemporaryDirectory() as tmp:
        warm = MinhashDedupSignature(output_folder=str(Path(tmp) / "warm"), config=config)
        step = MinhashDedupSignature(output_folder=str(Path(tmp) / "sigs"), config=config)
        patched = _fix_str_hashing(warm) | _fix_str_hashing(step)
        warm.run(iter([Document(text=_warm_text(), id="warm")]), rank=0, world_size=1)
        rss_setup = _proc_status_kb("VmRSS")
        with meter.timed():
            step.run(documents(), rank=0, world_size=1)
        written = sum(f.stat().st_size for f in (Path(tmp) / "sigs").rglob("*.sig"))
    meter.cpu -= reading.cpu
    meter.wall -= reading.wall
    return meter.result(
        "datatrove_minhash",
        rss_setup,
        hash_config=str(config.hash_config),
        hash_patched=patched,
        imported_torch="torch" in sys.modules,
        excluded_reading_cpu_s=reading.cpu,
        signature_bytes_written=written,
    )


def datasketch_minhash(corpus: Corpus, batch_size: int, rows, shared_permutations: bool) -> dict:
    from datasketch import MinHash

    template = MinHash(num_perm=NUM_PERM, seed=SEED)

    def signature(text: str) -> np.ndarray:
        w = text.lower().split()
        shingles = [" ".join(w[i : i + NGRAM]).encode("utf-8") for i in range(len(w) - NGRAM + 1)]
        if not shingles:  # fewer than NGRAM words: one shingle of them all
            shingles = [" ".join(w).encode("utf-8")]
        if shared_permutations:
            m = MinHash(
                num_perm=NUM_PERM, seed=SEED, permutations=template.permutations, scheme=template.scheme
            )
        else:
            m = MinHash(num_perm=NUM_PERM, seed=SEED)
        m.update_batch(shingles)
        return m.hashvalues

    signature(_warm_text())
    meter = Meter()
    rss_setup = _proc_status_kb("VmRSS")
    for batch in _source(corpus, batch_size, None, rows):
        texts = batch.column("text").to_pylist()
        meter.docs += len(texts)
        meter.bytes += _batch_bytes(batch)
        with meter.timed():
            for text in texts:
                signature(text)
    name = "datasketch_shared_perm" if shared_permutations else "datasketch"
    return meter.result(name, rss_setup)


# -- orchestration ------------------------------------------------------------------------------


def run_isolated(fn, **kwargs) -> dict:
    """Run one component in a fresh spawned process and return what it measured."""
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        result = pool.submit(fn, **kwargs).result()
    result["process_wall_s"] = time.perf_counter() - started
    return result


def mbps(r: dict) -> float:
    return r["bytes"] / 1e6 / r["cpu_s"] if r["cpu_s"] else float("nan")


def dps(r: dict) -> float:
    return r["docs"] / r["cpu_s"] if r["cpu_s"] else float("nan")


def machine_info() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as fh:
            mem_gb = int(fh.readline().split()[1]) / 1024**2
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory_gb": mem_gb,
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


def agreement(ours: dict, theirs: dict, kinds: dict) -> dict:
    ids = sorted(theirs)
    both_keep = both_remove = ours_only = theirs_only = 0
    pairs: Counter = Counter()
    by_kind: dict[str, Counter] = {}
    for doc_id in ids:
        a, b = ours[doc_id], theirs[doc_id]
        kind = by_kind.setdefault(kinds[doc_id], Counter())
        kind["docs"] += 1
        if a is None and b is None:
            both_keep += 1
        elif a is not None and b is not None:
            both_remove += 1
        else:
            if a is not None:
                ours_only += 1
            else:
                theirs_only += 1
            kind["disagree"] += 1
            pairs[(a or "keep", b or "keep")] += 1
    n = len(ids)
    return {
        "docs": n,
        "agree": (both_keep + both_remove) / n if n else float("nan"),
        "both_keep": both_keep,
        "both_remove": both_remove,
        "ours_remove_only": ours_only,
        "datatrove_remove_only": theirs_only,
        "pairs": [[a, b, c] for (a, b), c in pairs.most_common()],
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
    }


def _counts(c: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(c.items(), key=lambda kv: -kv[1]))


def _num(v) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def _reason_rows(run: dict) -> list[tuple[str, str, str]]:
    sizes = run.get("reason_bytes", {})
    return [
        (reason, f"{n:,}", f"{sizes.get(reason, 0) / 1e6:,.2f}")
        for reason, n in sorted(run["reasons"].items(), key=lambda kv: -kv[1])
    ]


def _fmt_mb(x: float) -> str:
    return f"{x:,.0f}"


def render(results: dict) -> str:
    """The Markdown section: machine, corpus, throughput, ratios, agreement, memory."""
    r = results["runs"]
    info, cfg = results["machine"], results["config"]
    full, sub = cfg["docs"], cfg["baseline_docs"]
    dt = r.get("datatrove_minhash", {})
    dt_hash = dt.get("hash_config", "its default HashConfig")
    dt_patch = (
        " Its default xxhash functions receive `str` shingles, which the installed xxhash rejects "
        "(xxhash ≥ 4: 'Strings must be encoded before hashing'), so the step's hash function was "
        "wrapped to UTF-8-encode each shingle first, as xxhash 3 did internally."
        if dt.get("hash_patched")
        else ""
    )
    lines = [
        "## Text pipeline: heuristic filters and fuzzy dedup vs datatrove and datasketch",
        "",
        f"Measured {results['date']} with `benchmarks/bench_text.py`, in one run:",
        "",
        f"    {results['command']}",
        "",
        f"Machine: {info['cpu']}, {info['usable_cpus']} usable of {info['logical_cpus']} logical CPUs, "
        + (f"{info['memory_gb']:.0f} GB RAM, " if info["memory_gb"] else "")
        + f"load average at start {', '.join(f'{x:.2f}' for x in info['load_average_at_start'])}; "
        f"Python {info['python']} ({info['platform']}). Packages: "
        + ", ".join(f"{k} {v}" for k, v in info["packages"].items())
        + ".",
        "",
        "### Corpus",
        "",
        results["corpus"],
        f"- Our components run on all {full:,} documents, streamed in batches of {cfg['batch_size']:,} "
        "(the pipeline's batch size). The baselines (datatrove, datasketch) run on a deterministic "
        f"uniform random subset of **{sub:,} documents** of the same corpus (`--baseline-docs`, seed "
        f"{cfg['seed']}); ours is also measured on that subset.",
        "",
        "### How it is measured",
        "",
        "- Each row is one fresh process (multiprocessing spawn) running alone, numeric libraries "
        "pinned to one thread. **Per core** = UTF-8 bytes (MB = 10⁶ bytes) or documents divided by "
        "the CPU seconds (user + system) of that process inside the timed section; wall seconds are "
        "shown too (on a busy machine they exceed CPU seconds). Reading Parquet is outside the timed "
        "sections (for datatrove's signature step, which pulls documents from a generator, the "
        "reading time is measured and subtracted).",
        "- Peak RSS is VmHWM of the process (interpreter, imports and warm-up included); "
        "'RSS after setup' is VmRSS after imports and warm-up, before the first document.",
        "- Ours: `filter_batch(frame, HeuristicParams(language_gate=False))` (datatrove has no "
        "language gate); `MinHasher(num_perm=128, ngram=5, seed=1).signatures(texts)`; "
        "`FuzzyDeduper.process(frame)` over a fresh `LocalFuzzyIndex` (threshold 0.8: signatures, "
        "batched LSH query, verification, insert), the index pickle written once at the end "
        "(`commit`, timed separately).",
        "- datatrove: `GopherQualityFilter()`, `GopherRepetitionFilter()`, `C4QualityFilter()` with "
        "default parameters, each document passed through `filter()` in that order and not passed on "
        "once removed (as in a pipeline; the pipeline's per-document stats bookkeeping is not "
        "included). `MinhashDedupSignature.run()` with `MinhashConfig(n_grams=5, num_buckets=16, "
        f"hashes_per_bucket=8, seed=1)` ({dt_hash}), writing and sorting its bucket files in a "
        f"temporary folder.{dt_patch}",
        *(
            [
                f"- datatrove's filter process used {dtc['rss_before_spacy_mb']:,.0f} MB after importing "
                f"datatrove and {dtc['rss_setup_mb']:,.0f} MB once its word tokenizer (spaCy's blank "
                "English pipeline) was loaded"
                + (
                    "; spaCy's thinc imported torch, which is installed here as a core dependency."
                    if dtc.get("imported_torch")
                    else "."
                )
            ]
            if (dtc := r.get("datatrove_chain"))
            else []
        ),
        "- datasketch: per document `MinHash(num_perm=128, seed=1)` then `update_batch` of "
        "`text.lower().split()` word 5-grams joined by spaces, encoded as UTF-8 (a document with "
        "fewer than 5 words is one shingle). The 'shared permutations' row passes "
        "`permutations=` from one template instead of generating them per document.",
        "",
        "### Throughput per core",
        "",
        "| component | documents | MB | CPU s | wall s | MB/s per core | docs/s per core "
        "| RSS after setup MB | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [
        ("ours: heuristic chain (all documents)", "ours_chain"),
        ("ours: heuristic chain (subset)", "ours_chain_subset"),
        ("datatrove: Gopher quality → repetition → C4 (subset)", "datatrove_chain"),
        ("ours: MinHash signatures (all documents)", "ours_minhash"),
        ("ours: MinHash signatures (subset)", "ours_minhash_subset"),
        ("ours: fuzzy dedup end to end (all documents)", "ours_fuzzy"),
        ("datatrove: MinhashDedupSignature step (subset)", "datatrove_minhash"),
        ("datasketch: MinHash + update_batch per doc (subset)", "datasketch"),
        ("datasketch, shared permutations (subset)", "datasketch_shared_perm"),
    ]
    for label, key in rows:
        if key not in r:
            continue
        x = r[key]
        lines.append(
            f"| {label} | {x['docs']:,} | {x['bytes'] / 1e6:,.1f} | {x['cpu_s']:,.1f} | {x['wall_s']:,.1f} "
            f"| {mbps(x):,.2f} | {dps(x):,.0f} | {_fmt_mb(x['rss_setup_mb'])} | {_fmt_mb(x['peak_rss_mb'])} |"
        )
    if "datatrove_chain" in r:
        lines += ["", "datatrove per filter (each on the documents that reached it):", ""]
        lines += ["| datatrove filter | documents | MB | CPU s | MB/s per core | docs/s per core |"]
        lines += ["|---|---:|---:|---:|---:|---:|"]
        for name, m in r["datatrove_chain"]["per_filter"].items():
            lines.append(
                f"| {name} | {m['docs']:,} | {m['bytes'] / 1e6:,.1f} | {m['cpu_s']:,.1f} "
                f"| {mbps(m):,.2f} | {dps(m):,.0f} |"
            )
    if "ours_fuzzy" in r:
        f = r["ours_fuzzy"]
        lines += [
            "",
            f"Fuzzy dedup removed {f['removed']:,} of {f['docs']:,} documents "
            f"({_counts(f['removed_by_kind'])}); "
            f"index: {f['index_entries']:,} entries, pickle {f['index_pickle_mb']:,.1f} MB, commit "
            f"{f['commit_cpu_s']:,.1f} CPU s (not in the throughput above).",
        ]

    lines += ["", "### Ratios (per core)", ""]
    lines += [
        "| comparison | ours MB/s | baseline MB/s | ratio | target | result |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, a, b, target in ratio_rows(r):
        ratio = mbps(r[a]) / mbps(r[b])
        verdict = "" if target is None else ("meets target" if ratio >= target else "**falls short**")
        lines.append(
            f"| {label} | {mbps(r[a]):,.2f} | {mbps(r[b]):,.2f} | {ratio:,.1f}x "
            f"| {'' if target is None else f'≥ {target:g}x'} | {verdict} |"
        )

    if "agreement" in results:
        a = results["agreement"]
        lines += [
            "",
            "### Keep/remove agreement with datatrove",
            "",
            f"On the {a['docs']:,}-document subset, our chain and datatrove's make the same keep/remove "
            f"decision on **{a['agree']:.2%}** of documents: both keep {a['both_keep']:,}, both remove "
            f"{a['both_remove']:,}; only we remove {a['ours_remove_only']:,}, only datatrove removes "
            f"{a['datatrove_remove_only']:,}.",
            "",
        ]
        if a["pairs"]:
            lines += ["| our decision | datatrove's decision | documents |", "|---|---|---:|"]
            lines += [f"| {x} | {y} | {c:,} |" for x, y, c in a["pairs"][:20]]
            if len(a["pairs"]) > 20:
                lines.append(f"| … {len(a['pairs']) - 20} more pairs | | |")
            lines += ["", "Disagreements by generated document kind:", ""]
            lines += ["| kind | documents | disagreements |", "|---|---:|---:|"]
            lines += [
                f"| {k} | {v.get('docs', 0):,} | {v.get('disagree', 0):,} |"
                for k, v in a["by_kind"].items()
                if v.get("disagree")
            ]
        lines += ["", "Removal reasons on the subset (documents, MB of text):", ""]
        lines += ["| ours | documents | MB | datatrove | documents | MB |", "|---|---:|---:|---|---:|---:|"]
        ours_r = _reason_rows(r["ours_chain_subset"])
        their_r = _reason_rows(r["datatrove_chain"])
        for i in range(max(len(ours_r), len(their_r))):
            o = ours_r[i] if i < len(ours_r) else ("", "", "")
            t = their_r[i] if i < len(their_r) else ("", "", "")
            lines.append(f"| {' | '.join(o)} | {' | '.join(t)} |")

    if "ours_chain" in r:
        c = r["ours_chain"]
        removed_bytes = sum(c.get("reason_bytes", {}).values())
        lines += [
            "",
            f"Our chain on all {c['docs']:,} documents removed {c['docs'] - c['kept']:,} documents "
            f"({removed_bytes / 1e6:,.1f} MB, {removed_bytes / c['bytes']:.1%} of the bytes); documents "
            "removed by an earlier rule never reach the later ones, in both implementations:",
            "",
            "| reason | documents | MB |",
            "|---|---:|---:|",
            *[f"| {' | '.join(row)} |" for row in _reason_rows(c)],
        ]
        lines += _kind_lines(c)

    scaling = results.get("scaling", {})
    if scaling:
        lines += ["", "### Peak memory against corpus size", ""]
        lines += [
            "Each run in a fresh process on the first share of the corpus. The chain keeps nothing "
            "between batches; the dedup index grows with what it has seen (that growth is the index).",
            "",
            "| component | share | documents | RSS after setup MB | peak RSS MB | index entries "
            "| index pickle MB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for comp, runs in scaling.items():
            for share, x in sorted(runs.items(), key=lambda kv: float(kv[0])):
                entries = f"{x['index_entries']:,}" if "index_entries" in x else ""
                pickle_mb = f"{x['index_pickle_mb']:,.1f}" if "index_pickle_mb" in x else ""
                lines.append(
                    f"| {comp} | {float(share):.0%} | {x['docs']:,} | {_fmt_mb(x['rss_setup_mb'])} "
                    f"| {_fmt_mb(x['peak_rss_mb'])} | {entries} | {pickle_mb} |"
                )
        lines += ["", *_growth_lines(scaling)]
        smallest = min(x["docs"] for runs in scaling.values() for x in runs.values())
        if smallest < 4 * cfg["batch_size"]:
            lines.append(
                f"- The smallest share holds fewer than four batches of {cfg['batch_size']:,} documents, "
                "so part of the difference is the batch being filled, not the corpus size."
            )
    return "\n".join(lines) + "\n"


def _kind_lines(c: dict) -> list[str]:
    """Our decisions by generated document kind, and for articles by length."""
    if "by_kind" not in c:
        return []
    kinds: dict[str, Counter] = {}
    for kind, reason, n in c["by_kind"]:
        kinds.setdefault(kind, Counter())[reason] += n
    lines = [
        "",
        "By generated document kind (our chain, all documents):",
        "",
        "| kind | documents | removed | main reasons |",
        "|---|---:|---:|---|",
    ]
    for kind, counts in sorted(kinds.items(), key=lambda kv: -kv[1].total()):
        removed = counts.total() - counts["kept"]
        top = [(r, n) for r, n in counts.most_common() if r != "kept"][:3]
        lines.append(
            f"| {kind} | {counts.total():,} | {removed:,} ({removed / counts.total():.0%}) "
            f"| {', '.join(f'{r} {n:,}' for r, n in top)} |"
        )
    lengths: dict[int, Counter] = {}
    for bucket, what, n in c.get("article_length", []):
        lengths.setdefault(bucket, Counter())[what] += n
    if lengths:
        lines += ["", "Articles by length (our chain):", ""]
        lines += ["| length | articles | removed |", "|---|---:|---:|"]
        for bucket, counts in sorted(lengths.items()):
            lines.append(
                f"| {_bucket_label(bucket)} | {counts['docs']:,} "
                f"| {counts['removed']:,} ({counts['removed'] / counts['docs']:.0%}) |"
            )
    return lines


def _growth_lines(scaling: dict) -> list[str]:
    """Peak RSS change between the smallest and the largest share, per component."""
    out = []
    for comp, runs in scaling.items():
        ordered = sorted(runs.items(), key=lambda kv: float(kv[0]))
        if len(ordered) < 2:
            continue
        (s0, a), (s1, b) = ordered[0], ordered[-1]
        delta = round(b["peak_rss_mb"] - a["peak_rss_mb"]) + 0.0
        line = (
            f"- {comp}: peak RSS {delta:+,.0f} MB from {float(s0):.0%} ({a['docs']:,} documents) to "
            f"{float(s1):.0%} ({b['docs']:,} documents)"
        )
        entries = b.get("index_entries", 0) - a.get("index_entries", 0)
        if entries > 0:
            line += (
                f", for {entries:,} more index entries: {delta * 1024 / entries:,.1f} KB of RSS per entry "
                f"(the signature itself is {NUM_PERM * 4} bytes; the pickle "
                f"{(b['index_pickle_mb'] - a['index_pickle_mb']) * 1e3 / entries:,.2f} KB per entry)"
            )
        out.append(line + ".")
    return out


def ratio_rows(r: dict) -> list[tuple[str, str, str, float | None]]:
    candidates = [
        (
            "heuristic chain vs datatrove (ours on all documents)",
            "ours_chain",
            "datatrove_chain",
            TARGET_CHAIN,
        ),
        ("heuristic chain vs datatrove (same subset)", "ours_chain_subset", "datatrove_chain", TARGET_CHAIN),
        (
            "MinHash signatures vs datasketch (ours on all documents)",
            "ours_minhash",
            "datasketch",
            TARGET_MINHASH,
        ),
        (
            "MinHash signatures vs datasketch (same subset)",
            "ours_minhash_subset",
            "datasketch",
            TARGET_MINHASH,
        ),
        (
            "MinHash signatures vs datasketch with shared permutations",
            "ours_minhash",
            "datasketch_shared_perm",
            None,
        ),
        ("MinHash signatures vs datatrove signature step", "ours_minhash", "datatrove_minhash", None),
        ("fuzzy dedup end to end vs datasketch signatures alone", "ours_fuzzy", "datasketch", None),
        ("fuzzy dedup end to end vs datatrove signature step alone", "ours_fuzzy", "datatrove_minhash", None),
    ]
    return [c for c in candidates if c[1] in r and c[2] in r]


def print_table(results: dict) -> None:
    r = results["runs"]
    print()
    print(
        f"{'component':<34} {'docs':>9} {'MB':>8} {'CPU s':>8} {'MB/s/core':>10} {'docs/s/core':>12} "
        f"{'peak RSS MB':>12}"
    )
    for key, x in r.items():
        print(
            f"{key:<34} {x['docs']:>9,} {x['bytes'] / 1e6:>8,.1f} {x['cpu_s']:>8,.1f} {mbps(x):>10,.2f} "
            f"{dps(x):>12,.0f} {x['peak_rss_mb']:>12,.0f}"
        )
    print()
    for label, a, b, target in ratio_rows(r):
        ratio = mbps(r[a]) / mbps(r[b])
        verdict = (
            "" if target is None else (f"target ≥{target:g}x: " + ("met" if ratio >= target else "SHORT"))
        )
        print(f"{label:<62} {ratio:>7.1f}x  {verdict}")
    if "agreement" in results:
        a = results["agreement"]
        print(
            f"\nkeep/remove agreement with datatrove on {a['docs']:,} docs: {a['agree']:.2%} "
            f"(only ours removes {a['ours_remove_only']:,}, "
            f"only datatrove removes {a['datatrove_remove_only']:,})"
        )
        for x, y, c in a["pairs"][:10]:
            print(f"    ours {x:<40} datatrove {y:<40} {c:>6,}")
    for comp, runs in results.get("scaling", {}).items():
        for share, x in sorted(runs.items(), key=lambda kv: float(kv[0])):
            print(
                f"memory {comp:<12} {float(share):>5.0%} of corpus: {x['docs']:>9,} docs, "
                f"after setup {x['rss_setup_mb']:,.0f} MB, peak {x['peak_rss_mb']:,.0f} MB"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--docs", type=int, default=200_000, help="corpus size (at least 200k for RESULTS.md)"
    )
    parser.add_argument("--seed", type=int, default=0, help="corpus and subset seed")
    parser.add_argument("--baseline-docs", type=int, default=20_000, help="documents the baselines run on")
    parser.add_argument(
        "--batch-size", type=int, default=5_000, help="documents per batch for our components"
    )
    parser.add_argument(
        "--scales", default="0.25,0.5", help="shares of the corpus to rerun our chain and dedup on (memory)"
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated components to leave out (for development)"
    )
    parser.add_argument("--out", type=Path, default=OUT / "text_results.md")
    args = parser.parse_args()
    os.environ.update(SINGLE_THREAD_ENV)  # inherited by every spawned worker
    skip = {s for s in args.skip.split(",") if s}
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    info = machine_info()
    corpus = ensure_corpus(args.docs, args.seed, log=log)
    subset = corpus.sample_rows(args.baseline_docs, args.seed)
    log(
        f"corpus {corpus.path}: {corpus.docs:,} docs, {corpus.bytes / 1e6:,.1f} MB; "
        f"baseline subset {len(subset):,}"
    )
    bs = args.batch_size
    plan = [
        ("ours_chain", ours_chain, {"batch_size": bs}),
        ("ours_chain_subset", ours_chain, {"batch_size": bs, "rows": subset, "decisions": True}),
        ("ours_minhash", ours_minhash, {"batch_size": bs}),
        ("ours_minhash_subset", ours_minhash, {"batch_size": bs, "rows": subset}),
        ("ours_fuzzy", ours_fuzzy, {"batch_size": bs}),
        ("datatrove_chain", datatrove_chain, {"batch_size": 2_000, "rows": subset}),
        ("datatrove_minhash", datatrove_minhash, {"batch_size": 2_000, "rows": subset}),
        (
            "datasketch",
            datasketch_minhash,
            {"batch_size": 2_000, "rows": subset, "shared_permutations": False},
        ),
        (
            "datasketch_shared_perm",
            datasketch_minhash,
            {"batch_size": 2_000, "rows": subset, "shared_permutations": True},
        ),
    ]
    runs: dict[str, dict] = {}
    for key, fn, kwargs in plan:
        if key in skip or key.split("_")[0] in skip:
            continue
        log(f"{key} …")
        runs[key] = run_isolated(fn, corpus=corpus, **kwargs)
        x = runs[key]
        log(
            f"{key}: {x['docs']:,} docs, {mbps(x):,.2f} MB/s per core, {dps(x):,.0f} docs/s per core, "
            f"peak RSS {x['peak_rss_mb']:,.0f} MB ({x['process_wall_s']:,.0f}s)"
        )

    scaling: dict[str, dict[str, dict]] = {}
    shares = [float(s) for s in args.scales.split(",") if s]
    for comp, fn in (("ours_chain", ours_chain), ("ours_fuzzy", ours_fuzzy)):
        if comp not in runs:
            continue
        scaling[comp] = {"1.0": runs[comp]}
        for share in shares:
            limit = max(1, round(corpus.docs * share))
            log(f"{comp} on {share:.0%} of the corpus ({limit:,} docs) …")
            scaling[comp][str(share)] = run_isolated(fn, corpus=corpus, batch_size=bs, limit=limit)
            log(f"{comp} {share:.0%}: peak RSS {scaling[comp][str(share)]['peak_rss_mb']:,.0f} MB")

    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": info,
        "config": {
            "docs": corpus.docs,
            "seed": args.seed,
            "baseline_docs": len(subset),
            "batch_size": bs,
            "num_perm": NUM_PERM,
            "ngram": NGRAM,
        },
        "corpus": corpus.describe(),
        "runs": runs,
        "scaling": scaling,
    }
    if "ours_chain_subset" in runs and "datatrove_chain" in runs:
        results["agreement"] = agreement(
            runs["ours_chain_subset"]["decisions"],
            runs["datatrove_chain"]["decisions"],
            runs["datatrove_chain"]["kinds"],
        )
    for x in runs.values():  # per-document decisions are for the agreement only
        x.pop("decisions", None)
        x.pop("kinds", None)
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    log(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
