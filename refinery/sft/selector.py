"""The ``sft_selected`` processor: decide the subset for the whole partition, then apply it.

Selection needs every record at once (k-means over all embeddings, quotas per cluster), so the
decision is made when the processor is built, and each streamed batch only looks its rows up:
memory is one embedding matrix, not the records' text.

What is embedded is ``dedup_text``, the record's documented key (:mod:`refinery.sft.dedup_keys`),
not the first user turn: conversations that open with the same greeting must not land in one
cluster because of it, and what counts as one record for dedup is what is spread over clusters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from refinery import markdown
from refinery.batch import BatchResult, split_batch
from refinery.kernel.processor import StageProcessor
from refinery.kernel.spec import StageLog
from refinery.metadata import Markdown
from refinery.models.embedder import Embedder
from refinery.sft.schema import KEY_COLUMN
from refinery.sft.select import Selection, SelectionParams, select, selection_plot
from refinery.storage import Storage

READ_COLUMNS = ["id", "kind", KEY_COLUMN, "quality"]
PREVIEW_CHARS = 200  # of each embedded text, kept after encoding for the per-cluster table


class SftSelector(StageProcessor):
    """Embeds the partition's record keys, selects, then marks each row kept or ``not_selected``."""

    def __init__(
        self,
        storage: Storage,
        upstream: str,
        source: str,
        params: SelectionParams,
        embedder: Embedder,
        log: StageLog | None = None,
    ):
        self.params, self.embedder = params, embedder
        log = log or StageLog()
        self.frame = storage.read(upstream, source, columns=READ_COLUMNS)
        self.embeddings = embedder.encode(self.frame[KEY_COLUMN].tolist())
        self.frame[KEY_COLUMN] = self.frame[KEY_COLUMN].str.slice(0, PREVIEW_CHARS)
        quality = pd.to_numeric(self.frame["quality"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        if params.within_cluster == "quality" and np.isnan(quality).all() and len(self.frame):
            log.warning("within_cluster='quality' but no record has a quality score: order is random")
        self.selection: Selection = select(self.embeddings, quality, params)
        s = self.selection
        self._by_id = {
            doc_id: (int(c), float(d), bool(k))
            for doc_id, c, d, k in zip(self.frame["id"], s.labels, s.distances, s.keep, strict=True)
        }
        if s.coverage < 1:
            log.warning(
                f"budget {s.budget} < {int((s.sizes > 0).sum())} clusters: "
                f"only {s.coverage:.0%} of clusters represented"
            )

    def __call__(self, batch: pd.DataFrame) -> BatchResult:
        info = [self._by_id[i] for i in batch["id"]]
        s, p = self.selection, self.params
        out = batch.assign(cluster=[c for c, _, _ in info], cluster_distance=[d for _, d, _ in info])
        reasons = [
            None
            if keep
            else (
                "not_selected",
                f"cluster {c}: {s.sizes[c]} → {s.taken[c]} ({p.allocation}, {p.within_cluster})",
            )
            for c, _, keep in info
        ]
        return split_batch(out, reasons)

    def report(self) -> dict:
        s, frame = self.selection, self.frame
        kept_kinds = frame.loc[s.keep, "kind"].value_counts().to_dict() if len(frame) else {}
        all_kinds = frame["kind"].value_counts().to_dict() if len(frame) else {}
        out = {
            "budget": s.budget,
            "clusters": s.k,
            "clusters_represented": int((s.taken > 0).sum()),
            "coverage": round(s.coverage, 4),
            "kmeans_iterations": s.iterations,
            "embedded_column": KEY_COLUMN,
            "embedding_model": self.embedder.name,
            "embedding_device": self.embedder.device,
            "per_cluster": Markdown(cluster_table(frame, s) if len(frame) else "_empty_"),
            "kinds_before_after": Markdown(
                markdown.table(
                    ["kind", "before", "after"], [(k, n, kept_kinds.get(k, 0)) for k, n in all_kinds.items()]
                )
            ),
        }
        if len(frame) >= 2:
            plot = selection_plot(self.embeddings, s.keep)
            out["projection"] = Markdown(f"![kept vs dropped, PCA of record-key embeddings]({plot})")
        return out

    def summary(self) -> dict:
        s = self.selection
        return {
            "clusters": s.k,
            "coverage": s.coverage,
            "cluster_sizes": s.sizes.tolist(),
            "cluster_taken": s.taken.tolist(),
        }


def cluster_table(frame: pd.DataFrame, selection: Selection, limit: int = 20) -> str:
    """Largest clusters first: size before, kept after, and the start of the embedded key of the
    record nearest the centroid."""
    examples = (
        frame.assign(cluster=selection.labels, d=selection.distances)
        .sort_values(["cluster", "d"])
        .drop_duplicates("cluster")
        .set_index("cluster")[KEY_COLUMN]
    )
    order = np.argsort(-selection.sizes, kind="stable")[:limit]
    rows = [
        (int(c), int(selection.sizes[c]), int(selection.taken[c]), markdown.preview(examples.get(c, ""), 80))
        for c in order
    ]
    more = len(selection.sizes) - len(order)
    note = f"\n\n_{more} smaller clusters not shown_" if more > 0 else ""
    return markdown.table(["cluster", "before", "after", "typical prompt"], rows) + note
