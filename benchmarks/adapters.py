"""The components the text benchmark measures: ours (library calls, batches as the pipeline
streams them) and the baselines (datatrove's filters and signature step, datasketch), each a
function that runs in its own process and returns what its :class:`Meter` saw."""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from benchmarks.corpus import Corpus
from benchmarks.harness import Meter, batch_bytes, proc_status_kb

NUM_PERM, NGRAM, SEED = 128, 5, 1
LENGTH_EDGES = [1_000, 2_000, 4_000, 8_000, 16_000]  # bytes, for the article-length breakdown


def _source(corpus: Corpus, batch_size: int, limit: int | None, rows, columns=("id", "text")):
    if rows is not None:
        return corpus.take(np.asarray(rows), columns=columns, batch_size=batch_size)
    return corpus.iter_batches(batch_size, columns=columns, limit=limit)


def _length_bucket(size: int) -> int:
    """Index into LENGTH_EDGES of the first edge above ``size`` (len(LENGTH_EDGES) if none)."""
    return next((i for i, edge in enumerate(LENGTH_EDGES) if size < edge), len(LENGTH_EDGES))


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
    rss_setup = proc_status_kb("VmRSS")
    for batch in _source(corpus, batch_size, limit, rows, columns=("id", "text", "kind")):
        frame = batch.to_pandas()
        kinds = dict(zip(frame["id"], frame.pop("kind"), strict=True))
        sizes = dict(zip(frame["id"], pc.binary_length(batch.column("text")).to_pylist(), strict=True))
        meter.docs += len(frame)
        meter.bytes += batch_bytes(batch)
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
    rss_setup = proc_status_kb("VmRSS")
    for batch in _source(corpus, batch_size, limit, rows):
        texts = batch.column("text").to_pylist()
        meter.docs += len(texts)
        meter.bytes += batch_bytes(batch)
        with meter.timed():
            sigs = hasher.signatures(texts)
        checksum ^= int(np.bitwise_xor.reduce(sigs, axis=None))
    return meter.result("ours_minhash", rss_setup, checksum=checksum)


def ours_fuzzy(corpus: Corpus, batch_size: int, limit=None, rows=None) -> dict:
    from refinery.dedup.fuzzy import FuzzyDeduper, FuzzyDedupParams
    from refinery.dedup.lsh_index import SqliteFuzzyIndex

    params = FuzzyDedupParams(num_perm=NUM_PERM, ngram=NGRAM, seed=SEED)
    removed: Counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        index = SqliteFuzzyIndex(Path(tmp) / "fuzzy_lsh.sqlite", params.index_params())
        meter = Meter()
        rss_setup = proc_status_kb("VmRSS")
        with index.claiming("bench") as claims:
            deduper = FuzzyDeduper(claims)
            for batch in _source(corpus, batch_size, limit, rows, columns=("id", "text", "kind")):
                frame = batch.to_pandas()
                meter.docs += len(frame)
                meter.bytes += batch_bytes(batch)
                with meter.timed():
                    result = deduper(frame)
                removed.update(result.rejected["kind"].tolist())
        index_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
    return meter.result(
        "ours_fuzzy",
        rss_setup,
        removed_by_kind=dict(removed),
        removed=sum(removed.values()),
        index_entries=claims.size,
        index_file_mb=index_mb,
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
    rss_before_spacy = proc_status_kb("VmRSS") / 1024
    for _, f in filters:  # loads spaCy's blank English pipeline
        f.filter(Document(text=_warm_text(), id="warm"))
    meter = Meter()
    per_filter = {name: Meter() for name, _ in filters}
    decided, kinds, reasons, reason_bytes = {}, {}, Counter(), Counter()
    rss_setup = proc_status_kb("VmRSS")
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
            meter.bytes += batch_bytes(batch)
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
        rss_setup = proc_status_kb("VmRSS")
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


def _per_document(fn, name: str, corpus, batch_size: int, rows) -> dict:
    """``fn(text)`` on every document, one at a time (a baseline's own loop), after one warm call."""
    fn(_warm_text())
    meter = Meter()
    rss_setup = proc_status_kb("VmRSS")
    for batch in _source(corpus, batch_size, None, rows):
        texts = batch.column("text").to_pylist()
        meter.docs += len(texts)
        meter.bytes += batch_bytes(batch)
        with meter.timed():
            for text in texts:
                fn(text)
    return meter.result(name, rss_setup)


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

    name = "datasketch_shared_perm" if shared_permutations else "datasketch"
    return _per_document(signature, name, corpus, batch_size, rows)


# -- orchestration ------------------------------------------------------------------------------


# -- cleaning and the whole rule-based chain ------------------------------------------------------


def ours_clean(corpus: Corpus, batch_size: int, limit=None, rows=None) -> dict:
    """``Cleaner`` (clean_documents' processor) over the batches."""
    from refinery.clean.cleaning import Cleaner, CleanParams

    cleaner = Cleaner(CleanParams())
    import pandas as pd

    cleaner(pd.DataFrame({"id": ["warm"], "text": [_warm_text()]}))
    meter = Meter()
    rss_setup = proc_status_kb("VmRSS")
    for batch in _source(corpus, batch_size, limit, rows):
        frame = batch.to_pandas()
        meter.docs += len(frame)
        meter.bytes += batch_bytes(batch)
        with meter.timed():
            cleaner(frame)
    return meter.result("ours_clean", rss_setup, documents_changed=cleaner.changed - 1, pii=cleaner.pii)


def clean_reference(corpus: Corpus, batch_size: int, limit=None, rows=None) -> dict:
    """The per-document path cleaning took before batching: ``ftfy.fix_text`` on every document
    (ftfy's defaults), NFC, then the Python-regex strip, tidy and redact (:func:`clean_text`'s
    steps one document at a time). Its output is what ``ours_clean`` must reproduce."""
    import ftfy

    from refinery.clean.normalize import normalize_form, normalize_whitespace, strip_invisible
    from refinery.clean.pii import PII_KINDS, redact

    kinds = set(PII_KINDS)

    def clean(text: str) -> str:
        text = normalize_whitespace(strip_invisible(normalize_form(ftfy.fix_text(text), "NFC")))
        return redact(text, kinds)[0]

    clean(_warm_text())
    meter, ftfy_meter = Meter(), Meter()
    rss_setup = proc_status_kb("VmRSS")
    for batch in _source(corpus, batch_size, limit, rows):
        texts = batch.column("text").to_pylist()
        meter.docs += len(texts)
        meter.bytes += batch_bytes(batch)
        with meter.timed():
            for text in texts:
                clean(text)
        rest = [t for t in texts if not t.isascii()]  # ftfy alone, on what is not pure ASCII
        ftfy_meter.docs += len(rest)
        ftfy_meter.bytes += sum(len(t.encode("utf-8", "surrogatepass")) for t in rest)
        with ftfy_meter.timed():
            for text in rest:
                ftfy.fix_text(text)
    return meter.result(
        "clean_reference",
        rss_setup,
        ftfy_non_ascii={"docs": ftfy_meter.docs, "bytes": ftfy_meter.bytes, "cpu_s": ftfy_meter.cpu},
    )


def ours_rule_chain(corpus: Corpus, batch_size: int, limit=None, rows=None) -> dict:
    """raw_documents → clean_documents → heuristic_filtered → exact_deduplicated →
    fuzzy_deduplicated as library calls on each batch (what the four stages' processors do,
    without Parquet in and out): ``Cleaner``, ``filter_batch``, ``ExactDeduper`` over a SQLite
    index and ``FuzzyDeduper`` over a local LSH index, both fresh. MB/s are of the raw input."""
    import pandas as pd

    from refinery.clean.cleaning import Cleaner, CleanParams
    from refinery.dedup.exact import ExactDeduper, ExactDedupParams
    from refinery.dedup.exact_index import SqliteExactIndex
    from refinery.dedup.fuzzy import FuzzyDeduper, FuzzyDedupParams
    from refinery.dedup.lsh_index import SqliteFuzzyIndex
    from refinery.filters.chain import filter_batch
    from refinery.filters.params import HeuristicParams

    heuristics, fuzzy_params = HeuristicParams(), FuzzyDedupParams(num_perm=NUM_PERM, ngram=NGRAM, seed=SEED)
    stage = {name: Meter() for name in ("clean", "heuristics", "exact", "fuzzy")}
    kept: Counter = Counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        SqliteExactIndex(Path(tmp) / "exact.sqlite").claiming("bench") as exact_claims,
        SqliteFuzzyIndex(Path(tmp) / "fuzzy_lsh.sqlite", fuzzy_params.index_params()).claiming(
            "bench"
        ) as fuzzy_claims,
    ):
        cleaner = Cleaner(CleanParams())
        exact = ExactDeduper(exact_claims, ExactDedupParams())
        fuzzy = FuzzyDeduper(fuzzy_claims)
        warm = pd.DataFrame({"id": ["warm"], "text": [_warm_text()]})
        filter_batch(cleaner(warm).kept, heuristics)
        fuzzy_claims.index.hasher.signatures([_warm_text()])
        meter = Meter()
        rss_setup = proc_status_kb("VmRSS")
        for batch in _source(corpus, batch_size, limit, rows):
            frame = batch.to_pandas()
            meter.docs += len(frame)
            meter.bytes += batch_bytes(batch)
            with meter.timed():
                for name, step in (
                    ("clean", cleaner),
                    ("heuristics", lambda f: filter_batch(f, heuristics)),
                    ("exact", exact),
                    ("fuzzy", fuzzy),
                ):
                    m = stage[name]
                    m.docs += len(frame)
                    m.bytes += int(frame["text"].str.len().sum()) if len(frame) else 0
                    with m.timed():
                        frame = step(frame).kept
                    kept[name] += len(frame)
    return meter.result(
        "ours_rule_chain",
        rss_setup,
        stages={k: {"docs": m.docs, "chars": m.bytes, "cpu_s": m.cpu} for k, m in stage.items()},
        kept=dict(kept),
    )


def rensa_minhash(corpus: Corpus, batch_size: int, rows) -> dict:
    """rensa's ``RMinHash`` (Rust) fed the same word 5-grams as the datasketch baseline: for speed
    only; its hash and permutations are its own, so its signatures are a different family."""
    from rensa import RMinHash

    def signature(text: str):
        w = text.lower().split()
        shingles = [" ".join(w[i : i + NGRAM]) for i in range(len(w) - NGRAM + 1)] or [" ".join(w)]
        m = RMinHash(num_perm=NUM_PERM, seed=SEED)
        m.update(shingles)
        return m.digest()

    return _per_document(signature, "rensa", corpus, batch_size, rows)
