"""The ``sft_selected`` processor: decide the subset for the whole partition, then apply it.

Selection needs every record's cluster before any row is written (k-means, quotas per cluster),
so the decision is made when the processor is built (:mod:`refinery.sft.selection_plan`: the
embeddings written to files, k-means fitted on a bounded sample, assignment and per-cluster
choice as tasks of the engine), and each streamed batch only looks its rows up. With the Ray
engine the embeddings come from a pool of model actors, the tasks run on the workers, and the
stage's rows are written by the workers too (the spec is ``parallel``): each worker's processor
is :meth:`SftSelector.decided` over the plan's decision files, named in the provenance.

What is embedded is ``dedup_text``, the record's documented key (:mod:`refinery.sft.dedup_keys`),
not the first user turn: conversations that open with the same greeting must not land in one
cluster because of it, and what counts as one record for dedup is what is spread over clusters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refinery import markdown
from refinery.batch import BatchResult, split_batch
from refinery.engine.slices import plan_slices, slice_location
from refinery.fs import child
from refinery.kernel.processor import StageProcessor
from refinery.kernel.spec import StageLog
from refinery.metadata import Markdown
from refinery.sft.plan_folder import plan_relative
from refinery.sft.schema import KEY_COLUMN
from refinery.sft.select import SelectionParams, selection_plot
from refinery.sft.selection_decisions import PieceDecisions
from refinery.sft.selection_plan import (
    PLAN_DIR,
    READ_COLUMNS,
    SelectionPlan,
    embed_here,
    embed_on_pool,
    embedded_files,
    embedded_rows,
    load_counts,
    load_decisions,
    new_plan_folder,
    plan_selection,
    run_name,
    save_counts,
    upstream_fingerprint,
)
from refinery.storage import Storage
from refinery.table_store import is_object, local_root, partition_identity

__all__ = ["PLAN_STAMP", "READ_COLUMNS", "SftSelector", "cluster_table", "selection_pool"]

PLAN_STAMP = "selection_plan"  # provenance key: the plan's folder, relative to the storage root
DECISIONS_READ = "selection_decisions_read"  # summary key: decisions read beside the rows
SLICE_ROWS = 20_000  # the decisions' pieces without an engine (the engines' default slice)
DECODE_CPUS = 0.25  # the decode step of text is reading a column: a quarter CPU beside each actor


def selection_pool(engine: Any, compute: Any) -> Any:
    """The embedding actors of a selection on Ray: one per worker of the engine (or the compute
    resource's ``ray_actors``), its GPUs and batch size; each actor leaves room for a decode task."""
    from refinery.engine.model_pool import ModelPool

    cpus = float(getattr(engine, "cpus_per_worker", 1.0))
    return ModelPool(
        actors=int(getattr(compute, "ray_actors", 0) or engine.parallelism()),
        num_gpus=float(compute.num_gpus or 0),
        batch_size=int(compute.batch_size),
        cpus_per_actor=max(cpus - DECODE_CPUS, DECODE_CPUS),
        decode_cpus=DECODE_CPUS,
    )


class SftSelector(StageProcessor):
    """Marks each row kept or ``not_selected`` from the partition's plan. :meth:`planned` makes the
    plan (the step); :meth:`decided` reads one made before (a worker writing its slices)."""

    def __init__(
        self,
        folder: Path | str,
        params: SelectionParams,
        plan: SelectionPlan | None = None,
        model: str = "",
        device: str = "",
    ):
        self.folder, self.params, self.plan = folder, params, plan
        self.stamp = ""  # the plan folder relative to the storage root (set by planned on a cluster)
        self.model, self.device = model, device
        self.sizes, self.taken = (plan.sizes, plan.taken) if plan is not None else load_counts(folder)
        # The rows' decisions, read beside them a batch at a time: a worker its slice's file only,
        # the local engine's step every piece's in order. The report needs the plotted sample's
        # only, read now (the plan folder is scratch: it may be gone when the report is made).
        self.decisions = PieceDecisions(folder)
        self.absorbed = 0  # decisions the workers read (their summaries, absorbed by the step's copy)
        self._shown = load_decisions(folder, plan.sample_ids) if plan is not None else {}

    @classmethod
    def decided(cls, folder: Path | str, params: SelectionParams) -> SftSelector:
        return cls(folder, params)

    @classmethod
    def planned(
        cls,
        storage: Storage,
        upstream: str,
        source: str,
        params: SelectionParams,
        embedder: Any = None,
        log: StageLog | None = None,
        *,
        loader: Any = None,
        engine: Any = None,
        pool: Any = None,
    ) -> SftSelector:
        """Embed, fit, assign and choose for the partition. ``embedder`` (a loaded model) or
        ``loader`` (whose ``load()`` gives one) embeds in this process; with a distributed
        ``engine`` and a ``pool`` the loader runs on the pool's model actors instead.

        The plan is scratch: on a local root, under it; on an object store, local scratch in this
        process (:func:`~refinery.table_store.local_root`) but under the root itself on a
        distributed engine, whose actors and tasks open it from its URI. :attr:`stamp` is then
        its path relative to the root, for the workers that write the rows."""
        log = log or StageLog()
        model = loader.model if loader is not None else embedder.name
        identity = partition_identity(storage, upstream, source)
        fingerprint = upstream_fingerprint(identity, params.model_dump_json(), model)
        distributed = engine is not None and engine.distributed
        shared = distributed or not is_object(storage)
        folder = new_plan_folder(storage.root if shared else local_root(storage), source, fingerprint)
        expected = storage.row_count(upstream, source)
        location = slice_location(storage, upstream, source)
        if distributed:
            if loader is None or pool is None:
                raise ValueError("selection on a distributed engine needs the embedder's loader and a pool")
            pieces = embed_on_pool(engine, location, loader.load, folder, pool)  # rows per slice
            model, device = loader.model, "cuda" if pool.num_gpus else loader.compute.device
        else:
            embedder = embedder if embedder is not None else loader.load()
            batches = storage.iter_batches(upstream, source, columns=READ_COLUMNS)
            embed_here(batches, embedder.encode, child(folder, "embed"))
            model, device = embedder.name, embedder.device
            # the decisions' pieces: slices as a distributed engine would cut them (one file each)
            pieces = [s.rows for s in plan_slices(location, getattr(engine, "slice_rows", SLICE_ROWS))]
        got = embedded_rows(embedded_files(folder))
        if got != expected:
            raise RuntimeError(
                f"{got} embeddings were written for the {expected} records of {upstream}[{source}] "
                "(a batch lost or written twice): rerun the stage"
            )
        if engine is not None:
            runner, workers = engine.tasks()
        else:
            from refinery.engine.tasks import InProcessTasks

            runner, workers = InProcessTasks(), 1
        plan = plan_selection(folder, params, runner, workers, pieces)
        save_counts(plan)
        if params.within_cluster == "quality" and plan.rows and not plan.scored:
            log.warning("within_cluster='quality' but no record has a quality score: order is random")
        if plan.coverage < 1:
            log.warning(
                f"budget {plan.budget} < {int((plan.sizes > 0).sum())} clusters: "
                f"only {plan.coverage:.0%} of clusters represented"
            )
        selector = cls(folder, params, plan, model, device)
        selector.stamp = plan_relative(PLAN_DIR, source, run_name(source, fingerprint))
        return selector

    @property
    def embeddings(self) -> np.ndarray:
        """The vectors k-means was fitted on (every record's while the partition fits the sample),
        at most ``PLOT_POINTS`` of them: what the projection plot shows."""
        return self.plan.sample if self.plan is not None else np.zeros((0, 0), np.float32)

    def __call__(self, batch: pd.DataFrame) -> BatchResult:
        info = self.decisions.take(batch["id"])
        p = self.params
        clusters = info["cluster"].tolist()
        out = batch.assign(cluster=clusters, cluster_distance=info["distance"].tolist())
        reasons = [
            None
            if keep
            else (
                "not_selected",
                f"cluster {c}: {self.sizes[c]} → {self.taken[c]} ({p.allocation}, {p.within_cluster})",
            )
            for c, keep in zip(clusters, info["keep"].tolist(), strict=True)
        ]
        return split_batch(out, reasons)

    def absorb(self, delta: dict) -> None:
        """A worker's count of the decisions it read (the Ray engine writes slices in parallel)."""
        self.absorbed += int(delta.get(DECISIONS_READ, 0))

    def report(self) -> dict:
        s = self.plan
        if s is None:  # a worker's copy: the step's processor reports
            return {}
        km = s.kmeans
        out = {
            "budget": s.budget,
            "clusters": s.k,
            "clusters_represented": int((s.taken > 0).sum()),
            "coverage": round(s.coverage, 4),
            "kmeans_iterations": km.iterations,
            "kmeans_fitted_on": len(s.sample),
            "embedded_column": KEY_COLUMN,
            "embedding_model": self.model,
            "embedding_device": self.device,
            "selection_tasks": s.tasks,
            "per_cluster": Markdown(cluster_table(s) if s.rows else "_empty_"),
            "kinds_before_after": Markdown(
                markdown.table(
                    ["kind", "before", "after"],
                    [
                        (k, n, s.kinds_after.get(k, 0))
                        for k, n in sorted(s.kinds_before.items(), key=lambda kv: -kv[1])
                    ],
                )
            ),
        }
        if len(s.sample) >= 2:
            keep = np.array([self._shown[i][2] for i in s.sample_ids])
            plot = selection_plot(s.sample, keep)
            out["projection"] = Markdown(f"![kept vs dropped, PCA of record-key embeddings]({plot})")
        return out

    def summary(self) -> dict:
        s = self.plan
        read = {DECISIONS_READ: self.decisions.read + self.absorbed}  # each record's once, on any engine
        if s is None:  # a worker's copy: what its slices read, summed by the step
            return read
        return {
            **read,
            "clusters": s.k,
            "coverage": s.coverage,
            "cluster_sizes": s.sizes.tolist(),
            "cluster_taken": s.taken.tolist(),
        }


def cluster_table(plan: SelectionPlan, limit: int = 20) -> str:
    """Largest clusters first: size before, kept after, and the start of the embedded key of the
    record nearest the centroid."""
    order = np.argsort(-plan.sizes, kind="stable")[:limit]
    rows = [
        (int(c), int(plan.sizes[c]), int(plan.taken[c]), markdown.preview(plan.examples.get(int(c), ""), 80))
        for c in order
    ]
    more = len(plan.sizes) - len(order)
    note = f"\n\n_{more} smaller clusters not shown_" if more > 0 else ""
    return markdown.table(["cluster", "before", "after", "typical prompt"], rows) + note
