"""``sft_checked`` on a distributed engine: the rules on the workers, the claims in the step, the
rows written by the workers.

The rules decide each record alone; the dedup claims do not (first come, first served, in
reading order, against indexes shared with every other source). So on Ray the stage runs in three
steps, and writes what the in-process stage writes, row for row and reason for reason:

1. **rules** (the engine's workers, ``map_slices``): which records pass the rules: one flag per row
   comes back;
2. **claims** (the step): the ``id``, ``kind`` and ``dedup_text`` of the records that passed are
   read in order, in batches, and claimed through :class:`~refinery.sft.dedup.SftPromptDeduper`
   exactly as in-process; each claim's outcome is written to ``dedup.parquet`` of the plan folder
   (``<storage>/_shuffle/sft_checked/<source>/<run>/``), never held whole;
3. **write** (the workers, the stage's slices): each worker runs the rules again on its rows (they
   are cheap next to a second read of the rows by the step) and looks each passing record's dedup
   outcome up in the plan (:class:`DecidedDedup`), through the same :func:`~refinery.sft.check.check_batch`.

The step's memory is one batch of keys; every row's text and responses are read by workers only.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.sft.dedup import SftPromptDeduper
from refinery.sft.rules import SftRuleParams, SftRules
from refinery.sft.schema import KEY_COLUMN
from refinery.sft.selection_plan import run_name
from refinery.storage import DEFAULT_BATCH_ROWS, Storage

PLAN_DIR = ("_shuffle", "sft_checked")
DEDUP_FILE = "dedup.parquet"
DECISION_COLUMNS = [
    "reason",
    "reason_detail",
    "duplicate_of",
    "similarity",
    "content_hash",
    "near_dup_similarity",
]
DEDUP_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("reason", pa.string()),
        ("reason_detail", pa.string()),
        ("duplicate_of", pa.string()),
        ("similarity", pa.float64()),
        ("content_hash", pa.string()),
        ("near_dup_similarity", pa.float32()),
    ]
)


def new_plan_folder(storage_root: Path, source: str, fingerprint: str = "") -> Path:
    """A fresh folder for this run, named by ``fingerprint`` (what fixes the run's results, so the
    provenance that names it is the same when a run is repeated); earlier runs' folders of the
    source are removed."""
    root = Path(storage_root).joinpath(*PLAN_DIR, source)
    if root.is_dir():
        for old in root.iterdir():
            shutil.rmtree(old, ignore_errors=True)
    folder = root / run_name(source, fingerprint)
    folder.mkdir(parents=True)
    return folder


def passes_rules(params: SftRuleParams) -> Any:
    """Step 1's function for ``engine.map_slices``: a batch in, one flag per row (passed the rules)."""
    rules = SftRules(params)

    def passed(frame: pd.DataFrame) -> np.ndarray:
        _, reasons = rules.apply(frame.reset_index(drop=True))
        return np.array([r is None for r in reasons], dtype=bool)

    return passed


def rule_flags(engine: Any, location: Path, columns: list[str], params: SftRuleParams) -> np.ndarray:
    """Step 1 on the engine's workers: every row's flag, in row order."""
    return engine.map_slices(location, partial(passes_rules, params), columns)


def claim_in_order(
    storage: Storage,
    upstream: str,
    source: str,
    passed: np.ndarray,
    deduper: SftPromptDeduper,
    folder: Path,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> int:
    """Step 2: the passing records' keys claimed in reading order; outcomes written to the plan.
    Returns how many records claimed."""
    offset, claimed = 0, 0
    target = folder / DEDUP_FILE
    temp = target.with_name(f".{target.name}.tmp")
    with pq.ParquetWriter(temp, DEDUP_SCHEMA) as writer:
        for frame in storage.iter_batches(upstream, source, batch_rows, columns=["id", "kind", KEY_COLUMN]):
            mask = passed[offset : offset + len(frame)]
            if len(mask) != len(frame):
                raise RuntimeError(f"{upstream}[{source}] changed while it was checked: rerun the stage")
            offset += len(frame)
            keys = frame.loc[mask].reset_index(drop=True)
            if not len(keys):
                continue
            decided = deduper.decide(keys)
            out = pd.DataFrame({"id": keys["id"].astype(str)})
            for col in DECISION_COLUMNS:
                out[col] = decided[col].to_numpy()
            writer.write_table(pa.Table.from_pandas(out, schema=DEDUP_SCHEMA, preserve_index=False))
            claimed += len(keys)
    if offset != len(passed):
        raise RuntimeError(f"{upstream}[{source}] changed while it was checked: rerun the stage")
    temp.replace(target)
    return claimed


class DecidedDedup:
    """The dedup outcomes of a plan, answering :meth:`SftPromptDeduper.decide` by lookup: what a
    worker writing its slices uses in place of the indexes."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._table: pd.DataFrame | None = None  # read on a worker's first batch, never by the step

    @property
    def table(self) -> pd.DataFrame:
        if self._table is None:
            table = pq.read_table(self.folder / DEDUP_FILE).to_pandas().set_index("id")
            if not table.index.is_unique:
                raise RuntimeError(
                    f"record ids repeat in {self.folder / DEDUP_FILE}: cannot look outcomes up"
                )
            self._table = table
        return self._table

    def decide(self, frame: pd.DataFrame) -> pd.DataFrame:
        ids = frame["id"].astype(str)
        missing = ~ids.isin(self.table.index)
        if missing.any():
            raise RuntimeError(
                f"no dedup outcome for {ids[missing].iloc[0]!r}: the plan does not match the rows"
            )
        out = self.table.loc[ids.tolist(), DECISION_COLUMNS].copy()
        out.index = frame.index
        out["similarity"] = out["similarity"].astype(float)
        out["near_dup_similarity"] = out["near_dup_similarity"].astype(np.float32)
        return out.astype({c: object for c in ("reason", "reason_detail", "duplicate_of", "content_hash")})
