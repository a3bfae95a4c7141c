"""The selection of one SFT partition as files and tasks, the same steps on every engine.

:func:`refinery.sft.select.select` decides a selection in memory. Here the same four steps run
over Parquet files, so a partition of any size is selected with bounded memory in the step and
the per-row work on an engine's workers:

1. **embed**: every record's ``dedup_text`` is embedded, and written with its reading position,
   id, kind and quality score to ``embed/`` (in this process for the local engine; on Ray by the
   model actors of :mod:`refinery.engine.model_pool`, each loading the model once);
2. **fit**: the step reads only the sample positions (:func:`~refinery.sft.select.sample_positions`)
   and fits k-means on them: memory is ``kmeans_sample_rows`` vectors;
3. **assign** (a task per embeddings file): each row to its nearest centroid, then a shuffle by
   cluster (:mod:`refinery.dedup.marked_shuffle`: every cluster goes to one reducer; each task's
   files committed by its done marker, so a rerun skips the tasks already done); each task returns
   only its cluster sizes and kind counts, from which the step allocates the quotas;
4. **choose** (a task per reducer): each cluster decided alone (:func:`~refinery.sft.select.choose`),
   and each decision (pos, id, cluster, distance, keep) sent to the piece of its reading position;
5. **collect** (a task per piece): a piece's decisions in position order, one Parquet file. The
   pieces are the slices the rows are written in (the engine's ``slice_rows``), so a worker writing
   slice ``i`` reads piece ``i``'s file only, a batch at a time
   (:class:`~refinery.sft.selection_decisions.PieceDecisions`), and the step, writing every row on
   the local engine, streams the files in order: no process holds the partition's decisions.

The tasks go through the engine's task runner (``engine.tasks()``: this process, or Ray tasks).
Nothing in steps 2–4 depends on how rows were cut into files or reducers, so the decisions equal
:func:`~refinery.sft.select.select` on the same embeddings (tests/unit/test_sft_selection_plan.py).
What is order-dependent is written in docs/sft.md: the sample and the random order within a
cluster follow reading positions (the upstream's row order), so reordering the input changes them.

The plan folder is a local path or, on the Ray engine over an object-store root, a URI under the
root (``<root>/_shuffle/sft_selected/<source>/<run>``) that the model actors and the tasks open from
its name (:class:`~refinery.engine.root_folder.RootFolder`): every file here is written whole
(renamed into place, or one upload).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from refinery.dedup.marked_shuffle import TaskOutput, WorkDir, committed, gather
from refinery.engine.root_folder import RootFolder, filesystem_of
from refinery.fs import child
from refinery.sft.plan_folder import fresh_run_folder
from refinery.sft.schema import KEY_COLUMN
from refinery.sft.select import (
    KMeansResult,
    SelectionParams,
    allocate,
    assign,
    choose,
    fit,
    preference,
    sample_positions,
)

READ_COLUMNS = ["id", "kind", KEY_COLUMN, "quality"]
PREVIEW_CHARS = 200  # of each embedded key, kept for the per-cluster table
PLAN_DIR = ("_shuffle", "sft_selected")
DECISIONS = "decisions"  # the collect step's files: collect/decisions/t-<piece>.<attempt>.parquet
DECISION_COLUMNS = ["pos", "id", "cluster", "distance", "keep"]
PLOT_POINTS = 4000


def run_name(source: str, fingerprint: str) -> str:
    import hashlib

    return hashlib.sha256(f"{source}\0{fingerprint}".encode()).hexdigest()[:16]


def upstream_fingerprint(location: Path | str, *parts: object) -> str:
    """What fixes a plan: the upstream files (names and sizes; on an object store the manifest's
    version, given as ``location``) and the given values (parameters)."""
    from refinery.storage import parquet_files

    files = (
        [(f.name, f.stat().st_size) for f in parquet_files(location)]
        if isinstance(location, Path)
        else location
    )
    return repr((files, *parts))


def new_plan_folder(storage_root: Path | str, source: str, fingerprint: str = "") -> Path | str:
    """A fresh folder for this run's plan (a local path, or a URI under an object-store root), named
    by ``fingerprint`` (what fixes the run's results, so the provenance that names it is the same
    when a run is repeated); earlier runs' plans of the source are removed."""
    folder = fresh_run_folder(child(storage_root, *PLAN_DIR, source), run_name(source, fingerprint))
    RootFolder.of(folder).sub("embed").make()
    return folder


# -- step 1: the embeddings, written with their positions ----------------------------------------
def quality_of(frame: pd.DataFrame) -> np.ndarray:
    if "quality" not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame["quality"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def write_embedded(
    folder: Path | str, positions: np.ndarray, frame: pd.DataFrame, vectors: np.ndarray
) -> None:
    """One embeddings file (named by its first position, written whole: renamed into place, or one
    upload; a retried batch rewrites the same file)."""
    if not len(frame):
        return
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    table = pa.table(
        {
            "pos": pa.array(np.asarray(positions, dtype=np.int64)),
            "id": pa.array(frame["id"].astype(str).tolist(), pa.string()),
            "kind": pa.array(frame["kind"].astype(str).tolist(), pa.string()),
            "quality": pa.array(quality_of(frame), pa.float64()),
            "preview": pa.array(
                frame[KEY_COLUMN].fillna("").str.slice(0, PREVIEW_CHARS).tolist(), pa.string()
            ),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
        }
    )
    RootFolder.of(folder).write_table(f"e-{int(positions[0]):012d}.parquet", table)


def embed_here(batches, encode: Callable[[list[str]], np.ndarray], folder: Path | str) -> int:
    """Step 1 in this process: each batch embedded and written; returns the rows seen."""
    pos = 0
    for frame in batches:
        frame = frame.reset_index(drop=True)
        vectors = encode(frame[KEY_COLUMN].fillna("").tolist())
        write_embedded(folder, np.arange(pos, pos + len(frame)), frame, vectors)
        pos += len(frame)
    return pos


def vectors_of(table: pa.Table) -> np.ndarray:
    column = table.column("vector").combine_chunks()
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)


def embedded_files(folder: Path | str) -> list[str]:
    """The embeddings files of a plan, by name (a local path, or a URI with the root's query: what
    a task on a worker opens)."""
    embed = RootFolder.of(folder).sub("embed")
    return [child(embed.name, n) for n in embed.names() if n.startswith("e-") and n.endswith(".parquet")]


def read_embedded(file: str, columns: list[str] | None = None) -> pa.Table:
    """One embeddings file (:func:`embedded_files`), through its root's filesystem."""
    filesystem, path = filesystem_of(file)
    return pq.read_table(path, columns=columns, filesystem=filesystem)


def embedded_rows(files: list[str]) -> int:
    total = 0
    for f in files:
        filesystem, path = filesystem_of(f)
        total += pq.read_metadata(path, filesystem=filesystem).num_rows
    return total


# -- step 2: the sample the k-means is fitted on --------------------------------------------------
def read_sample(files: list[str], positions: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
    """The vectors (and pos, id) of the sample positions, in position order; only those are held."""
    wanted = pa.array(positions)
    tables = []
    for f in files:
        t = read_embedded(f, ["pos", "id", "vector"])
        tables.append(t.filter(pc.is_in(t.column("pos"), value_set=wanted)))
    if not tables:
        return np.zeros((0, 0), np.float32), pd.DataFrame({"pos": [], "id": []})
    table = pa.concat_tables(tables).sort_by("pos")
    return vectors_of(table), table.select(["pos", "id"]).to_pandas()


# -- step 3: assignment and the shuffle by cluster ------------------------------------------------
def reducer_of(labels: np.ndarray, reducers: int) -> np.ndarray:
    return np.asarray(labels, dtype=np.int64) % reducers


def assign_task(step: str, index: int, file: str, centroids: np.ndarray, reducers: int) -> dict:
    """Assign one embeddings file's rows and send each to its cluster's reducer; returns the
    file's cluster sizes and kinds."""
    out = TaskOutput(step, index)
    table = read_embedded(file)
    labels, distances = assign(vectors_of(table), centroids)
    rows = table.drop(["vector"]).append_column("cluster", pa.array(labels, pa.int32()))
    rows = rows.append_column("distance", pa.array(distances, pa.float32()))
    out.scatter(rows, reducer_of(labels, reducers), reducers)
    kinds = pd.Series(table.column("kind").to_pylist(), dtype=object).value_counts().to_dict()
    quality = table.column("quality").to_numpy(zero_copy_only=False).astype(float)
    scored = int((~np.isnan(quality)).sum())
    sizes = np.bincount(labels, minlength=len(centroids)).tolist()
    return out.commit({"sizes": sizes, "kinds": kinds, "scored": scored})


# -- step 4: each cluster decided alone -----------------------------------------------------------
def piece_of(positions: np.ndarray, starts: list[int]) -> np.ndarray:
    """The piece (slice) holding each reading position; ``starts``: each piece's first position."""
    return np.searchsorted(np.asarray(starts, np.int64), np.asarray(positions, np.int64), side="right") - 1


def choose_task(
    step: str, index: int, assigned: str, taken: list[int], params: dict, starts: list[int]
) -> dict:
    """Decide every cluster of reducer ``index``; send each decision to the piece of its reading
    position (``starts``: the pieces' first positions) and return, per cluster, the key preview of
    the record nearest the centroid, and the kinds kept."""
    p = SelectionParams.model_validate(params)
    out = TaskOutput(step, index)
    table = gather(assigned, index)
    if table is None:
        return out.commit({"examples": {}, "kept_kinds": {}})
    frame = table.to_pandas()
    labels = frame["cluster"].to_numpy(np.int64)
    primary = preference(
        p.within_cluster, frame["quality"].to_numpy(float), frame["distance"].to_numpy(float)
    )
    positions = frame["pos"].to_numpy(np.int64)
    frame["keep"] = choose(labels, primary, positions, np.asarray(taken), p.seed + 1)
    decided = pa.Table.from_pandas(frame[DECISION_COLUMNS], preserve_index=False)
    out.scatter(decided, piece_of(positions, starts), len(starts))
    nearest = frame.sort_values(["cluster", "distance", "pos"]).drop_duplicates("cluster")
    return out.commit(
        {
            "examples": {
                str(int(c)): str(t) for c, t in zip(nearest["cluster"], nearest["preview"], strict=True)
            },
            "kept_kinds": frame.loc[frame["keep"], "kind"].value_counts().to_dict(),
        }
    )


# -- step 5: each piece's decisions in position order ----------------------------------------------
def collect_task(step: str, index: int, chosen: str, start: int, rows: int) -> dict:
    """Piece ``index``'s decisions (positions ``[start, start + rows)``), sorted by position and
    written as one file; every position must have exactly one."""
    out = TaskOutput(step, index)
    table = gather(chosen, index)
    if table is None:
        table = pa.schema(
            [("pos", pa.int64()), ("id", pa.string()), ("cluster", pa.int32()),
             ("distance", pa.float32()), ("keep", pa.bool_())]
        ).empty_table()  # fmt: skip
    table = table.take(pc.sort_indices(table, [("pos", "ascending")]))
    if not np.array_equal(table.column("pos").to_numpy(), np.arange(start, start + rows)):
        raise RuntimeError(f"selection piece {index}: {table.num_rows} decisions for its {rows} records")
    out.write(DECISIONS, table, row_group_size=8192)
    return out.commit({"rows": rows})


@dataclass
class SelectionPlan:
    """What the step keeps of a selection: figures per cluster, the fit, a sample for the plot,
    and the folder whose decision files the rows are looked up in."""

    folder: Path | str
    rows: int
    budget: int
    k: int
    sizes: np.ndarray
    taken: np.ndarray
    kmeans: KMeansResult
    sample: np.ndarray  # at most PLOT_POINTS of the fit's vectors, in position order (for the plot)
    sample_ids: list[str]
    examples: dict[int, str] = field(default_factory=dict)
    kinds_before: dict[str, int] = field(default_factory=dict)
    kinds_after: dict[str, int] = field(default_factory=dict)
    scored: int = 0  # records with a quality score
    tasks: dict[str, Any] = field(default_factory=dict)
    pieces: int = 1  # the collect step's files (one per slice)

    @property
    def coverage(self) -> float:
        nonempty = int((self.sizes > 0).sum())
        return float((self.taken > 0).sum() / nonempty) if nonempty else 1.0


def plan_selection(
    folder: Path | str,
    params: SelectionParams,
    runner: Any,
    workers: int,
    pieces: list[int] | None = None,
) -> SelectionPlan:
    """Steps 2–5 over the embeddings under ``folder`` with the task runner ``runner``. ``pieces``:
    the rows of each slice the stage's rows are written in (None: one piece), whose decisions
    the collect step writes to one file each."""
    files = embedded_files(folder)
    n = embedded_rows(files)
    pieces = [n] if pieces is None else [int(r) for r in pieces]
    if sum(pieces) != n:
        raise RuntimeError(f"the slices hold {sum(pieces)} records, the embeddings {n}: rerun the stage")
    starts = np.r_[0, np.cumsum(pieces)[:-1]].astype(np.int64).tolist()
    budget = params.budget(n)
    k = params.clusters(n, budget)
    sample, sample_frame = read_sample(files, sample_positions(n, params))
    if n and len(sample) != min(n, params.kmeans_sample_rows):
        raise RuntimeError(
            f"the embeddings of {folder} hold {len(sample)} of the sample's rows: rerun the stage"
        )
    km = fit(sample, k, params) if n else fit(np.zeros((0, 1), np.float32), 0, params)
    k = len(km.centroids)
    shown = np.arange(len(sample))
    if len(sample) > PLOT_POINTS:  # the step keeps only what the plot shows
        shown = np.sort(np.random.default_rng(params.seed).choice(len(sample), PLOT_POINTS, replace=False))
    sample, sample_ids = sample[shown], [sample_frame["id"].iloc[i] for i in shown]
    work = WorkDir(child(folder, "shuffle"))
    reducers = max(1, min(workers, k))
    assigned = work.run(
        runner, "assign", assign_task, [(f, km.centroids, reducers) for f in files] if k else []
    )
    sizes = np.zeros(k, np.int64)
    kinds: dict[str, int] = {}
    scored = 0
    for r in assigned:
        scored += r["scored"]
        sizes += np.asarray(r["sizes"], dtype=np.int64)
        for kind, count in r["kinds"].items():
            kinds[kind] = kinds.get(kind, 0) + count
    if int(sizes.sum()) != n:
        raise RuntimeError(f"assignment saw {int(sizes.sum())} of {n} rows")
    taken = allocate(sizes, budget, params.allocation, params.seed)
    shared = (str(work.step("assign")), taken.tolist(), params.model_dump(), starts)  # one object for all
    chosen = work.run(runner, "choose", choose_task, [shared] * reducers if k else [])
    RootFolder(work.step("assign")).remove()  # the rows' copies
    RootFolder.of(folder).sub("embed").remove()
    chose = str(work.step("choose"))
    work.run(runner, "collect", collect_task, [(chose, s, r) for s, r in zip(starts, pieces, strict=True)])
    RootFolder(chose).remove()  # the decisions' scattered copies; collect's files stay until written
    kept_kinds: dict[str, int] = {}
    examples: dict[int, str] = {}
    for r in chosen:
        examples.update({int(c): t for c, t in r["examples"].items()})
        for kind, count in r["kept_kinds"].items():
            kept_kinds[kind] = kept_kinds.get(kind, 0) + count
    return SelectionPlan(
        folder, n, budget, k, sizes, taken, km, sample, sample_ids, examples, kinds,
        kept_kinds, scored, {"runner": getattr(runner, "name", "?"), "assign_tasks": len(files),
        "reducers": reducers}, len(pieces),
    )  # fmt: skip


PLAN_FILE = "plan.json"


def save_counts(plan: SelectionPlan) -> None:
    """The per-cluster counts a worker needs to name each row's reason (the folder is the plan)."""
    counts = json.dumps({"sizes": plan.sizes.tolist(), "taken": plan.taken.tolist()})
    RootFolder.of(plan.folder).write_bytes(PLAN_FILE, counts.encode())


def load_counts(folder: Path | str) -> tuple[np.ndarray, np.ndarray]:
    raw = RootFolder.of(folder).read_bytes(PLAN_FILE)
    if raw is None:
        raise FileNotFoundError(f"{folder} has no {PLAN_FILE}: the selection plan is incomplete")
    counts = json.loads(raw)
    return np.asarray(counts["sizes"], np.int64), np.asarray(counts["taken"], np.int64)


def decision_files(folder: Path | str) -> list[str]:
    """The collect step's decision files, one per piece in position order (paths on the plan's
    filesystem); an error if a piece's is missing."""
    files = committed(child(folder, "shuffle", "collect"), DECISIONS)
    tasks = [task for task, _, _ in files]
    if tasks != list(range(len(files))):
        raise RuntimeError(f"the selection plan {folder} misses pieces' decisions ({tasks}): rerun the stage")
    return [path for _, _, path in files]


def load_decisions(folder: Path | str, ids: list[str] | None = None) -> dict[str, tuple[int, float, bool]]:
    """id -> (cluster, distance, keep) for every record of the plan, or for ``ids`` only (what the
    step's report needs: the plotted sample, never the partition). The rows are decided through
    :class:`~refinery.sft.selection_decisions.PieceDecisions`, a slice at a time, never this dict."""
    out: dict[str, tuple[int, float, bool]] = {}
    filesystem = RootFolder.of(folder).fs
    wanted = None if ids is None else pa.array(ids, pa.string())
    for f in decision_files(folder):
        t = pq.read_table(f, columns=["id", "cluster", "distance", "keep"], filesystem=filesystem)
        if wanted is not None:
            t = t.filter(pc.is_in(t.column("id"), value_set=wanted))
        cols = [t.column(c).to_pylist() for c in ("id", "cluster", "distance", "keep")]
        out.update({i: (int(c), float(d), bool(k)) for i, c, d, k in zip(*cols, strict=True)})
    return out


# -- step 1 on Ray: the model actors write the embeddings ----------------------------------------
POS = "__pos"


def with_positions(offsets: list[int], frame: pd.DataFrame) -> pd.DataFrame:
    """The decode step on Ray's CPU tasks: each row's reading position from its (slice, row)."""
    from refinery.engine.model_pool import ORDER

    order = frame[ORDER].to_numpy(np.int64)
    starts = np.asarray(offsets, dtype=np.int64)[order >> 32]
    return frame.assign(**{POS: starts + (order & 0xFFFFFFFF)})


def encode_and_write(folder: str, model: Any, frame: pd.DataFrame) -> int:
    """The model actors' step: embed a batch and write it; only its row count goes back."""
    vectors = model.encode(frame[KEY_COLUMN].fillna("").tolist())
    write_embedded(folder, frame[POS].to_numpy(np.int64), frame, vectors)
    return len(frame)


class CountingActor:
    """The embed step's model actor: loads the model once (``__init__``), then has each batch
    embedded and written (the stage's ``infer``), and reports how many rows of each slice it wrote:
    one (slice, rows) pair per slice a batch touches, never a value per row."""

    def __init__(self, payload: bytes):
        from ray import cloudpickle

        self.stage = cloudpickle.loads(payload)
        self.model = self.stage.load()

    def __call__(self, frame: pd.DataFrame) -> dict[str, list]:
        from refinery.engine.model_pool import ORDER

        written = self.stage.infer(self.model, frame.drop(columns=[ORDER]))
        if written != len(frame):
            raise ValueError(f"the embed step wrote {written} rows for {len(frame)}")
        pieces, counts = np.unique(frame[ORDER].to_numpy(np.int64) >> 32, return_counts=True)
        return {"slice": pieces.tolist(), "rows": counts.tolist()}


def embed_on_pool(
    engine: Any, location: Path | str, load: Callable[[], Any], folder: Path | str, pool: Any
) -> list[int]:
    """Step 1 on the engine's Ray cluster: decode tasks, then ``pool``'s model actors (each runs
    ``load`` once) embedding and writing (:func:`refinery.engine.model_actors.actor_reports`).
    Returns the rows embedded per slice (every slice's count checked against its rows): the step
    receives a pair of numbers per batch, nothing per row."""
    from functools import partial

    from ray import cloudpickle

    from refinery.engine.model_actors import actor_reports
    from refinery.engine.model_pool import ModelStage, decode_slices
    from refinery.engine.slices import plan_slices

    engine.connect()
    slices = plan_slices(location, engine.slice_rows)  # the slices the workers write the rows in
    offsets = np.r_[0, np.cumsum([s.rows for s in slices])].tolist()
    stage = ModelStage(
        READ_COLUMNS,
        load,
        partial(encode_and_write, child(folder, "embed")),
        decode=partial(with_positions, offsets),
    )
    counts = np.zeros(len(slices), np.int64)
    filled = [s for s in slices if s.rows]
    if filled:
        reports, _ = actor_reports(filled, cloudpickle.dumps(stage), pool, CountingActor, (), decode_slices)
        for report in reports:
            counts[int(report["slice"])] += int(report["rows"])
    wrong = [s.index for s in slices if counts[s.index] != s.rows]
    if wrong:
        s = slices[wrong[0]]
        raise RuntimeError(
            f"slice {s.index}: {int(counts[s.index])} records embedded of {s.rows} "
            f"({len(wrong)} slices wrong): rerun the stage"
        )
    return counts.tolist()
