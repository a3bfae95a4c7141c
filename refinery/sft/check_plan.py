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
   exactly as in-process; each claim's outcome is written to ``dedup/part-<slice>.parquet`` of the plan folder
   (``<storage>/_shuffle/sft_checked/<source>/<run>/``), never held whole;
3. **write** (the workers, the stage's slices): each worker runs the rules again on its rows (they
   are cheap next to a second read of the rows by the step) and looks each passing record's dedup
   outcome up in the plan (:class:`DecidedDedup`), through the same :func:`~refinery.sft.check.check_batch`.

The step's memory is one batch of keys; every row's text and responses are read by workers only.
Every folder here is a local path or a URI on the storage root's object store (the workers open
it from its name: :class:`~refinery.engine.root_folder.RootFolder`); an outcome part appears whole
(renamed into place, or one upload), and the workers read only those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.dedup.fuzzy import signature_function
from refinery.dedup.signature_parts import SIGNATURE_COLUMN, SignatureParts
from refinery.engine.root_folder import RootFolder
from refinery.engine.slices import current_slice
from refinery.fs import child
from refinery.sft.check import SftCheckParams
from refinery.sft.dedup import SftPromptDeduper
from refinery.sft.plan_folder import fresh_run_folder
from refinery.sft.rules import SftRules
from refinery.sft.schema import KEY_COLUMN, KIND_GROUPS
from refinery.sft.selection_plan import run_name
from refinery.storage import DEFAULT_BATCH_ROWS, PART_NAME, PartsWriter, Storage

PLAN_DIR = ("_shuffle", "sft_checked")
DEDUP_DIR = "dedup"  # the claims' outcomes, one part per slice
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


def new_plan_folder(storage_root: Path | str, source: str, fingerprint: str = "") -> Path | str:
    """A fresh folder for this run (a local path, or a URI under an object store root), named by
    ``fingerprint`` (what fixes the run's results, so the provenance that names it is the same when
    a run is repeated); earlier runs' folders of the source are removed."""
    return fresh_run_folder(child(storage_root, *PLAN_DIR, source), run_name(source, fingerprint))


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


@dataclass
class RuleParts:
    """Step 1's parts: each row's flag and signature, streamed back in row order (``reader``), and
    the rows of each slice, in slice order (``sizes``: the claims' outcomes are written per slice)."""

    reader: SignatureParts
    sizes: list[int]


def rule_parts(
    engine: Any, location: Path | str, columns: list[str], params: SftCheckParams, folder: Path | str
) -> RuleParts:
    """Step 1 on the engine's workers, written as parts in ``folder`` (a local path or a URI; a
    retried run reuses the parts already written): each row's flag and signature, streamed back in
    row order by the claims, a part at a time; the step never holds the partition's flags or
    signatures."""
    RootFolder.of(folder).make()
    parts = engine.map_to_parts(location, partial(rule_table_function, params), columns, folder)
    parts = sorted(parts, key=lambda p: p["index"])
    sizes = [int(p["rows"]) for p in parts]
    reader = SignatureParts(
        folder, [p["index"] for p in parts], int(params.num_perm), sum(sizes), PASSED_COLUMN
    )
    return RuleParts(reader, sizes)


class SliceOutcomes:
    """The claims' outcomes written per slice (``dedup/part-<slice>.parquet``, every slice a file,
    empty where no record of it passed the rules), so a worker reads only its slice's. A part is
    written under a temporary name and renamed into place on a local root; on an object store it
    is one upload, which appears when its writer closes."""

    def __init__(self, folder: Path | str, sizes: list[int]):
        self.folder = RootFolder.of(folder).sub(DEDUP_DIR).make()
        self.bounds = np.cumsum(sizes, dtype=np.int64)
        self._writers: dict[int, pq.ParquetWriter] = {}
        self._opened: set[int] = set()

    def write(self, positions: np.ndarray, table: pa.Table) -> None:
        slices = np.searchsorted(self.bounds, positions, side="right")
        for index in np.unique(slices).tolist():
            rows = np.flatnonzero(slices == index)
            self._writer(index).write_table(table.take(pa.array(rows)))

    def _writer(self, index: int) -> pq.ParquetWriter:
        for earlier in [i for i in self._writers if i < index]:  # positions only grow
            self._writers.pop(earlier).close()
        if index not in self._writers:
            self._opened.add(index)
            self._writers[index] = pq.ParquetWriter(
                self._temp(index), DEDUP_SCHEMA, filesystem=self.folder.fs
            )
        return self._writers[index]

    def _final(self, index: int) -> str:
        return self.folder.file(PartsWriter.part_name(index))

    def _temp(self, index: int) -> str:
        name = PartsWriter.part_name(index)
        return self.folder.file(f".{name}.tmp") if self.folder.local else self._final(index)

    def close(self) -> None:
        for index in range(len(self.bounds)):
            if index in self._writers:
                self._writers.pop(index).close()
            elif index not in self._opened:  # no record of the slice passed the rules
                pq.write_table(DEDUP_SCHEMA.empty_table(), self._temp(index), filesystem=self.folder.fs)
            if self.folder.local:
                Path(self._temp(index)).replace(self._final(index))


def claim_in_order(
    storage: Storage,
    upstream: str,
    source: str,
    rules: RuleParts,
    deduper: SftPromptDeduper,
    folder: Path | str,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> int:
    """Step 2: the passing records' keys claimed in reading order, with the signatures the workers
    computed; outcomes written to the plan, per slice. Returns how many records claimed."""
    claimed, offset = 0, 0
    outcomes = rules.reader
    written = SliceOutcomes(folder, rules.sizes)
    for frame in storage.iter_batches(upstream, source, batch_rows, columns=["id", "kind", KEY_COLUMN]):
        try:
            mask, signatures = outcomes.take_flagged(len(frame))
        except ValueError as exc:
            changed = f"{upstream}[{source}] changed while it was checked: rerun the stage"
            raise RuntimeError(changed) from exc
        positions = offset + np.flatnonzero(mask)
        offset += len(frame)
        keys = frame.loc[mask].reset_index(drop=True)
        if not len(keys):
            continue
        decided = deduper.decide(keys, signatures[mask])
        out = pd.DataFrame({"id": keys["id"].astype(str)})
        for col in DECISION_COLUMNS:
            out[col] = decided[col].to_numpy()
        written.write(positions, pa.Table.from_pandas(out, schema=DEDUP_SCHEMA, preserve_index=False))
        claimed += len(keys)
    if outcomes.taken != outcomes.rows:
        raise RuntimeError(f"{upstream}[{source}] changed while it was checked: rerun the stage")
    written.close()
    return claimed


class DecidedDedup:
    """The dedup outcomes of a plan, answering :meth:`SftPromptDeduper.decide` by lookup: what a
    worker writing its slices uses in place of the indexes. A worker reads its slice's outcomes
    only; outside a slice (one process) every slice's. ``folder``: a local path or a URI."""

    def __init__(self, folder: Path | str):
        self.folder = RootFolder.of(folder)
        self._table: pd.DataFrame | None = None  # read on a worker's first batch, never by the step
        self._slice: int | None = None

    @property
    def table(self) -> pd.DataFrame:
        piece = current_slice()
        index = None if piece is None else piece.index
        if self._table is None or index != self._slice:
            folder = self.folder.sub(DEDUP_DIR)
            names = [n for n in folder.names() if PART_NAME.match(n)]
            files = [PartsWriter.part_name(index)] if index is not None else names
            tables = [folder.read_table(f) for f in files]
            table = (pa.concat_tables(tables) if tables else DEDUP_SCHEMA.empty_table()).to_pandas()
            table = table.set_index("id")
            if not table.index.is_unique:
                raise RuntimeError(f"record ids repeat in {folder}: cannot look outcomes up")
            self._table, self._slice = table, index
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
