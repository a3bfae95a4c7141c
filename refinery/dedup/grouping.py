"""Step 2 of corpus-wide fuzzy dedup on any engine: band rows grouped into candidate pairs.

The documents' band keys are made one band at a time and handed to the engine's ``map_groups``
keyed by ``shard``: within a band, a function of the bucket, so every ``(band, bucket)`` group lands
whole in one shard. Each shard is paired by :func:`~refinery.dedup.corpus_dedup.candidate_pairs`,
which handles all of its buckets in one vectorized pass, and the pairs are made unique here. The
local engine takes the bands one after another in this process (one band's rows in memory); the
Ray engine shuffles them over the cluster. Grouping by shard rather than by ``(band, bucket)``
keeps the calls to a few per worker and band instead of one per bucket (13 per document: millions
of Python calls on a large corpus, nearly all for single-member buckets). Every engine gives the
same pairs and counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import numpy as np
import pandas as pd

from refinery.dedup.corpus_dedup import PairStats, band_rows, candidate_pairs, unique_pairs
from refinery.kernel.spec import Engine

SHARDS_PER_WORKER = 4  # groups of buckets per worker and band
SHARD_COUNTS = ("shared_buckets", "large_buckets", "large_bucket_docs")


def group_pairs(
    engine: Engine,
    signatures: np.ndarray,
    bands: int,
    rows: int,
    max_bucket_all_pairs: int = 64,
    anchors: int = 4,
) -> tuple[pd.DataFrame, PairStats]:
    """Unique candidate pairs ``(a, b)``, ``a < b``, over every band, and what the grouping saw."""
    shards = max(1, SHARDS_PER_WORKER * engine.parallelism())
    stats = PairStats()

    def frames() -> Iterator[pd.DataFrame]:
        for band in range(bands):
            frame = band_rows(signatures, bands, rows, only_band=band)
            stats.band_rows += len(frame)
            yield frame.assign(shard=band * shards + np.mod(frame["bucket"].to_numpy(), shards))

    found = engine.map_groups(
        frames(), "shard", partial(shard_pairs, max_bucket_all_pairs=max_bucket_all_pairs, anchors=anchors)
    )
    return collect_shard_pairs(found, stats)


def shard_pairs(group: pd.DataFrame, max_bucket_all_pairs: int, anchors: int) -> pd.DataFrame:
    """One shard (complete ``(band, bucket)`` groups): its candidate pairs, plus one row
    ``a = b = -1`` carrying what the grouping saw (shared and large buckets)."""
    pairs, stats = candidate_pairs(group[["band", "bucket", "doc"]], max_bucket_all_pairs, anchors)
    counts = pd.DataFrame({"a": [-1], "b": [-1], **{k: [getattr(stats, k)] for k in SHARD_COUNTS}})
    return pd.concat([pairs.assign(**dict.fromkeys(SHARD_COUNTS, 0)), counts], ignore_index=True)


def collect_shard_pairs(found: pd.DataFrame, stats: PairStats) -> tuple[pd.DataFrame, PairStats]:
    """The shards' rows as unique pairs, and ``stats`` (a PairStats holding the band-row count)
    completed from the shards' count rows."""
    a = found["a"].to_numpy(dtype=np.int64) if len(found) else np.zeros(0, np.int64)
    b = found["b"].to_numpy(dtype=np.int64) if len(found) else np.zeros(0, np.int64)
    for name in SHARD_COUNTS:
        setattr(stats, name, int(found[name].sum()) if len(found) else 0)
    real = a >= 0
    pairs = unique_pairs(a[real], b[real])
    stats.candidate_pairs = len(pairs)
    return pairs, stats
