"""Small training schedules written with the real ``write_shards``, for the loader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.schedule.shards import write_shards
from refinery.storage import Storage


def write_schedule(
    root: Path,
    domains: list[str],
    docs_per_step: int,
    shard_docs: int = 300,
    row_group_docs: int = 50,
    held_out: int = 0,
) -> Path:
    """A train split whose position p holds a document of domain ``domains[p]`` with the text
    ``"<domain> doc <p>"`` (one corpus source per domain), plus ``held_out`` validation documents.
    Returns the schedule root (``storage/training_schedule``)."""
    storage = Storage(root / "storage")
    names = sorted(set(domains))
    for name in names:
        ids = [p for p, d in enumerate(domains) if d == name]
        path = storage.path("pretrain_corpus", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.table(
                {
                    "id": [f"d{p}" for p in ids],
                    "text": [f"{name} doc {p}" for p in ids],
                    "source": [name] * len(ids),
                }
            ),
            path,
        )
    rows = [("train", p, d) for p, d in enumerate(domains)]
    rows += [("validation", i, domains[i % len(domains)]) for i in range(held_out)]
    n = len(rows)
    manifest = pa.table(
        {
            "split": [r[0] for r in rows],
            "position": np.array([r[1] for r in rows], np.int64),
            "step": np.array([r[1] // docs_per_step for r in rows], np.int64),
            "phase": np.zeros(n, np.int32),
            "shard": np.array([r[1] // shard_docs for r in rows], np.int32),
            "domain": [r[2] for r in rows],
            "source": [r[2] for r in rows],
            "id": [f"d{r[1] if r[0] == 'train' else r[1] % len(domains)}" for r in rows],
            "epoch": np.zeros(n, np.int32),
            "replay": np.zeros(n, bool),
            "tokens": np.full(n, 3, np.int64),
            "difficulty": np.full(n, np.nan),
        }
    )
    out = root / "storage" / "training_schedule"
    out.mkdir(parents=True, exist_ok=True)
    write_shards(
        storage,
        manifest,
        out,
        docs_per_step=docs_per_step,
        shard_docs=shard_docs,
        row_group_docs=row_group_docs,
        split_names=["train", "validation"],
    )
    return out


def mixed_domains(n: int, shares: dict[str, float], seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    names = list(shares)
    p = np.array([shares[d] for d in names])
    return [names[i] for i in rng.choice(len(names), size=n, p=p / p.sum())]
