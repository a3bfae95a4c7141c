"""``sft_checked`` on a distributed engine: the rules on the workers, the claims in the step, the
rows written by the workers.

The rules decide each record alone; the dedup claims do not (first come, first served, in
reading order, against indexes shared with every other source). So on Ray the stage runs in three
steps, and writes what the in-process stage writes, row for row and reason for reason:

1. **rules** (the engine's workers, ``map_to_parts``): which records pass the rules, and the MinHash
   signature of each passing prompt, written as parts beside the plan (never gathered);
2. **claims** (the step): the ``id``, ``kind`` and ``dedup_text`` of the records that passed are
   read in order, in batches, with their flags and signatures a part at a time, and claimed
   through :class:`~refinery.sft.dedup.SftPromptDeduper`
   exactly as in-process; each claim's outcome is written to ``dedup.parquet`` of the plan folder
   (``<storage>/_shuffle/sft_checked/<source>/<run>/``), never held whole;
3. **write** (the workers, the stage's slices): each worker runs the rules again on its rows (they
   are cheap next to a second read of the rows by the step) and looks each passing record's dedup
   outcome up in the plan (:class:`DecidedDedup`), through the same :func:`~refinery.sft.check.check_batch`.

The step's memory is one batch of keys; every row's text and responses are read by workers only.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.dedup.fuzzy import signature_function
from refinery.dedup.signature_parts import SIGNATURE_COLUMN, SignatureParts
from refinery.sft.check import SftCheckParams
from refinery.sft.dedup import SftPromptDeduper
from refinery.sft.rules import SftRules
from refinery.sft.schema import KEY_COLUMN, KIND_GROUPS
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


PASSED_COLUMN = "passed"


def rule_table_function(params: SftCheckParams) -> Callable[[pd.DataFrame], pa.Table]:
    """Step 1 on a worker, per batch: which rows pass the rules, and the MinHash signature of each
    passing prompt whose group is fuzzy-deduplicated (zeros elsewhere). Signing is the expensive
    half of fuzzy dedup (shingling and hashing every prompt), so the step is left the claims only.
    The hasher is the index's (:meth:`SftDedupParams.index_params`), as in-process."""
    rules = SftRules(params)
    lsh = params.index_params()
    sign = signature_function(lsh)
    num_perm = int(lsh["num_perm"])
    fuzzy_groups = set(params.fuzzy_groups) if params.fuzzy else set()

    def table(frame: pd.DataFrame) -> pa.Table:
        frame = frame.reset_index(drop=True)
        _, reasons = rules.apply(frame)
        passed = np.array([r is None for r in reasons], dtype=bool)
        signed = passed & frame["kind"].map(KIND_GROUPS).isin(fuzzy_groups).to_numpy(dtype=bool)
        signatures = np.zeros((len(frame), num_perm), dtype=np.uint32)
        if signed.any():
            texts = frame.loc[signed, [KEY_COLUMN]].rename(columns={KEY_COLUMN: "text"})
            signatures[signed] = np.asarray(sign(texts), dtype=np.uint32).reshape(-1, num_perm)
        values = pa.array(signatures.ravel(), type=pa.uint32())
        return pa.table(
            {
                PASSED_COLUMN: pa.array(passed),
                SIGNATURE_COLUMN: pa.FixedSizeListArray.from_arrays(values, num_perm),
            }
        )

    return table


def rule_parts(
    engine: Any, location: Path, columns: list[str], params: SftCheckParams, folder: Path
) -> SignatureParts:
    """Step 1 on the engine's workers, written as parts in ``folder`` (a retried run reuses the
    parts already written): each row's flag and signature, streamed back in row order by the
    claims, a part at a time; the step never holds the partition's flags or signatures."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    parts = engine.map_to_parts(location, partial(rule_table_function, params), columns, folder)
    rows = sum(p["rows"] for p in parts)
    return SignatureParts(
        folder, [p["index"] for p in parts], int(params.num_perm), rows, flags=PASSED_COLUMN
    )


def claim_in_order(
    storage: Storage,
    upstream: str,
    source: str,
    outcomes: SignatureParts,
    deduper: SftPromptDeduper,
    folder: Path,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> int:
    """Step 2: the passing records' keys claimed in reading order, with the signatures the workers
    computed; outcomes written to the plan. Returns how many records claimed."""
    claimed = 0
    target = folder / DEDUP_FILE
    temp = target.with_name(f".{target.name}.tmp")
    with pq.ParquetWriter(temp, DEDUP_SCHEMA) as writer:
        for frame in storage.iter_batches(upstream, source, batch_rows, columns=["id", "kind", KEY_COLUMN]):
            try:
                mask, signatures = outcomes.take_flagged(len(frame))
            except ValueError as exc:
                changed = f"{upstream}[{source}] changed while it was checked: rerun the stage"
                raise RuntimeError(changed) from exc
            keys = frame.loc[mask].reset_index(drop=True)
            if not len(keys):
                continue
            decided = deduper.decide(keys, signatures[mask])
            out = pd.DataFrame({"id": keys["id"].astype(str)})
            for col in DECISION_COLUMNS:
                out[col] = decided[col].to_numpy()
            writer.write_table(pa.Table.from_pandas(out, schema=DEDUP_SCHEMA, preserve_index=False))
            claimed += len(keys)
    if outcomes.taken != outcomes.rows:
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
