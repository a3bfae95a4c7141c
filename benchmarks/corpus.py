"""A seeded, web-like English text corpus for benchmarks, written once to Parquet and reused.

Documents come from :mod:`refinery.sample.prose`. Most are articles whose paragraph count is
log-normal (median 6 paragraphs, about 2 KB; a tail of long documents up to
``MAX_PARAGRAPHS``), so byte throughput is measured on a realistic length mix. The rest is
what a crawl holds and the pipeline exists for, in fixed shares (``MIX``): articles with PII or
mojibake, near duplicates and exact or surface-variant copies of earlier documents, navigation
boilerplate, keyword spam, lorem ipsum, code, bullet dumps, short stubs, other languages.

The corpus is keyed by (seed, documents, ``VERSION``) and stored under
``benchmarks/out/corpus/text-s<seed>-n<docs>-v<version>/`` as ``part-NNNNN.parquet`` shards of
``SHARD_DOCS`` rows (columns ``id``, ``text``, ``kind``) plus ``manifest.json``, written last
as the completion marker. Each shard is generated from its own seed, so shards can be made in
parallel and the result does not depend on the number of workers. Copies and near duplicates
refer to earlier documents of the same shard.

    .venv/bin/python -m benchmarks.corpus --docs 200000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.sample import prose

VERSION = 1  # bump when generation changes: the cache key includes it
SHARD_DOCS = 10_000
ROW_GROUP_DOCS = 2_000
DEFAULT_ROOT = Path(__file__).resolve().parent / "out" / "corpus"

# Article length: paragraphs ~ log-normal(ln 6, 0.85), at least 1, at most MAX_PARAGRAPHS.
PARAGRAPH_MEDIAN = 6
PARAGRAPH_SIGMA = 0.85
MAX_PARAGRAPHS = 400

# Share of each kind of document (sums to 1).
MIX: dict[str, float] = {
    "article": 0.770,
    "article_pii": 0.030,
    "article_mojibake": 0.010,
    "near_duplicate": 0.060,
    "exact_copy": 0.020,
    "surface_variant": 0.010,
    "boilerplate": 0.020,
    "keyword_spam": 0.015,
    "lorem_ipsum": 0.005,
    "code_snippet": 0.010,
    "bullet_dump": 0.010,
    "short_stub": 0.015,
    "foreign": 0.015,
}
_RECENT = 2_000  # copies and near duplicates pick from this many earlier documents


def _paragraphs(rng: random.Random) -> int:
    n = round(rng.lognormvariate(math.log(PARAGRAPH_MEDIAN), PARAGRAPH_SIGMA))
    return max(1, min(MAX_PARAGRAPHS, n))


def _article(rng: random.Random) -> str:
    return prose.article(rng, paragraphs=_paragraphs(rng))


def _document(kind: str, rng: random.Random, articles: list[str], docs: list[str]) -> str:
    if kind == "article":
        return _article(rng)
    if kind == "article_pii":
        return prose.with_pii(_article(rng), rng)
    if kind == "article_mojibake":
        return prose.with_mojibake(_article(rng))
    if kind == "near_duplicate":
        source = rng.choice(articles[-_RECENT:]) if articles else _article(rng)
        return prose.near_duplicate(source, rng, edits=rng.randint(1, 5))
    if kind == "exact_copy":
        return rng.choice(docs[-_RECENT:]) if docs else _article(rng)
    if kind == "surface_variant":
        return prose.surface_variant(rng.choice(articles[-_RECENT:]) if articles else _article(rng))
    if kind == "boilerplate":
        return prose.boilerplate_page(rng)
    if kind == "keyword_spam":
        return prose.keyword_spam(rng)
    if kind == "lorem_ipsum":
        return prose.lorem_ipsum(rng)
    if kind == "code_snippet":
        return prose.code_snippet(rng)
    if kind == "bullet_dump":
        return prose.bullet_dump(rng)
    if kind == "short_stub":
        return prose.short_stub(rng)
    if kind == "foreign":
        return prose.foreign_article(rng)
    raise ValueError(f"unknown kind {kind!r}")


def generate_shard(seed: int, shard: int, first: int, count: int) -> pa.Table:
    """Documents ``first .. first+count-1`` of the corpus (one shard), from their own seed."""
    rng = random.Random(f"refinery-bench-text/{seed}/{shard}")
    kinds, weights = list(MIX), list(MIX.values())
    ids, texts, labels = [], [], []
    articles: list[str] = []
    for i in range(first, first + count):
        kind = rng.choices(kinds, weights)[0]
        text = _document(kind, rng, articles, texts)
        if kind in ("article", "article_pii"):
            articles.append(text)
            if len(articles) > 2 * _RECENT:
                del articles[:_RECENT]
        ids.append(f"doc-{i:08d}")
        texts.append(text)
        labels.append(kind)
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "text": pa.array(texts, pa.large_string()),
            "kind": pa.array(labels, pa.string()),
        }
    )


def _write_shard(folder: str, seed: int, shard: int, first: int, count: int) -> dict:
    table = generate_shard(seed, shard, first, count)
    path = Path(folder) / f"part-{shard:05d}.parquet"
    temp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temp, compression="zstd", row_group_size=ROW_GROUP_DOCS)
    os.replace(temp, path)
    texts = table.column("text").to_pylist()
    return {
        "file": path.name,
        "docs": table.num_rows,
        "bytes": sum(len(t.encode("utf-8")) for t in texts),
        "kinds": dict(Counter(table.column("kind").to_pylist())),
        "lengths": [len(t.encode("utf-8")) for t in texts],
    }


@dataclass
class Corpus:
    path: Path
    manifest: dict

    @property
    def docs(self) -> int:
        return int(self.manifest["docs"])

    @property
    def bytes(self) -> int:
        return int(self.manifest["bytes"])

    @property
    def files(self) -> list[Path]:
        return [self.path / s["file"] for s in self.manifest["shards"]]

    def iter_batches(
        self, batch_size: int = 1_000, columns: Sequence[str] = ("id", "text"), limit: int | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Stream the first ``limit`` documents (all by default) in order, ``batch_size`` at a time.

        Decoding runs on the calling thread only, so a benchmark's CPU time is its own.
        """
        left = self.docs if limit is None else min(limit, self.docs)
        for path in self.files:
            if left <= 0:
                return
            for batch in pq.ParquetFile(path).iter_batches(
                batch_size=batch_size, columns=list(columns), use_threads=False
            ):
                if left <= 0:
                    return
                if batch.num_rows > left:
                    batch = batch.slice(0, left)
                left -= batch.num_rows
                yield batch

    def take(
        self, rows: np.ndarray, columns: Sequence[str] = ("id", "text"), batch_size: int = 2_000
    ) -> Iterator[pa.RecordBatch]:
        """The documents at the given sorted global row positions, in corpus order, in batches of
        ``batch_size`` (the last one smaller)."""
        rows = np.asarray(rows, dtype=np.int64)
        start, pending, held = 0, [], 0
        for batch in self.iter_batches(batch_size, columns):
            end = start + batch.num_rows
            lo, hi = np.searchsorted(rows, [start, end])
            if hi > lo:
                pending.append(batch.take(pa.array(rows[lo:hi] - start)))
                held += hi - lo
            while held >= batch_size:
                merged = pa.concat_batches(pending)
                yield merged.slice(0, batch_size)
                rest = merged.slice(batch_size)
                pending, held = ([rest] if rest.num_rows else []), rest.num_rows
            start = end
        if held:
            yield pa.concat_batches(pending)

    def sample_rows(self, k: int, seed: int) -> np.ndarray:
        """A deterministic uniform random subset of ``k`` row positions, sorted."""
        k = min(k, self.docs)
        return np.sort(np.random.default_rng([seed, 0xBE7C4]).choice(self.docs, size=k, replace=False))

    def describe(self) -> str:
        """Markdown lines: size, lengths and the kind mix."""
        m = self.manifest
        if m.get("origin") == "real":
            from benchmarks.real_corpus import describe

            return describe(m)
        q = m["length_quantiles"]
        lines = [
            f"- {m['docs']:,} documents, {m['bytes'] / 1e6:,.1f} MB of UTF-8 text, generated with "
            f"`benchmarks/corpus.py` (seed {m['seed']}, version {m['version']}) from "
            "`refinery.sample.prose` (synthetic English prose and crawl junk, no downloads).",
            f"- Document length in bytes: mean {m['bytes'] / m['docs']:,.0f}, median {q['50']:,}, "
            f"p10 {q['10']:,}, p90 {q['90']:,}, p99 {q['99']:,}, max {q['100']:,}. Articles have "
            f"log-normal paragraph counts (median {PARAGRAPH_MEDIAN}, σ {PARAGRAPH_SIGMA}).",
            "- Mix: "
            + ", ".join(
                f"{k} {v / m['docs']:.1%}" for k, v in sorted(m["kinds"].items(), key=lambda x: -x[1])
            )
            + ".",
        ]
        return "\n".join(lines)


def generator_fingerprint() -> str:
    """A hash of the prose generator's code and vocabulary: any change to them changes the corpus."""
    import hashlib

    import refinery.sample.prose as prose

    digest = hashlib.sha256()
    folder = Path(prose.__file__).parent
    for name in ("prose.py", "prose_vocabulary.json"):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:8]


def corpus_dir(docs: int, seed: int, root: Path = DEFAULT_ROOT) -> Path:
    return root / f"text-s{seed}-n{docs}-v{VERSION}-g{generator_fingerprint()}"


def ensure_corpus(
    docs: int, seed: int = 0, root: Path = DEFAULT_ROOT, workers: int | None = None, log=print
) -> Corpus:
    """Open the corpus for (docs, seed), generating it first if it is not complete on disk."""
    folder = corpus_dir(docs, seed, root)
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        return Corpus(folder, json.loads(manifest_path.read_text()))
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted earlier run
    folder.mkdir(parents=True)
    jobs = [
        (str(folder), seed, shard, first, min(SHARD_DOCS, docs - first))
        for shard, first in enumerate(range(0, docs, SHARD_DOCS))
    ]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    log(f"generating corpus: {docs:,} documents in {len(jobs)} shards with {workers} processes → {folder}")
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            shards = list(pool.map(_write_shard, *zip(*jobs, strict=True)))
    else:
        shards = [_write_shard(*job) for job in jobs]
    lengths = np.concatenate([np.asarray(s.pop("lengths"), dtype=np.int64) for s in shards])
    kinds: Counter = Counter()
    for s in shards:
        kinds.update(s["kinds"])
    manifest = {
        "version": VERSION,
        "seed": seed,
        "docs": docs,
        "bytes": int(lengths.sum()),
        "length_quantiles": {
            str(q): int(np.percentile(lengths, q, method="nearest")) for q in (10, 50, 90, 99, 100)
        },
        "kinds": dict(kinds),
        "mix": MIX,
        "shards": shards,
    }
    temp = manifest_path.with_name(".manifest.json.tmp")
    temp.write_text(json.dumps(manifest, indent=1))
    os.replace(temp, manifest_path)
    return Corpus(folder, manifest)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    corpus = ensure_corpus(args.docs, args.seed, workers=args.workers)
    print(corpus.path)
    print(corpus.describe())


if __name__ == "__main__":
    main()
