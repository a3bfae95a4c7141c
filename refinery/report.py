"""The corpus report: every partition's journey through the text stages, in one place.

Built from the small per-partition stats files each stage writes, so it costs nothing to
refresh however large the corpus is. On any storage root: the stats files and the report's two
tables (``<root>/corpus_report/stages.parquet``, ``reasons.parquet``) go through the root's
filesystem, a local folder or an object store; the Markdown and the DuckDB catalog stay under
``$REFINERY_HOME/reports`` (local). An object store's SQL views are datasets registered on a
connection (:mod:`refinery.sql_views`), which a catalog file cannot hold: there the report lists the
views and ``refinery sql`` (or :func:`refinery.sql.connect`) opens them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from refinery import markdown
from refinery.metadata import FilePath, Json, Markdown
from refinery.names import CORPUS_REPORT, HEURISTIC_FILTERED, MULTILINGUAL_FILTERED
from refinery.stages.text import TEXT_FILTER_STAGES
from refinery.stats import LENGTH_EDGES, Histogram
from refinery.storage import Storage
from refinery.table_store import AnyStorage, is_object

TEXT_STAGES = list(TEXT_FILTER_STAGES)
# The chain, with the other-languages output beside the stage that routes to it.
REPORT_STAGES = [
    *TEXT_STAGES[: TEXT_STAGES.index(HEURISTIC_FILTERED) + 1],
    MULTILINGUAL_FILTERED,
    *TEXT_STAGES[TEXT_STAGES.index(HEURISTIC_FILTERED) + 1 :],
]
# rows_routed: input rows a stage leaves to another one (heuristic_filtered routes the documents in
# other languages to multilingual_filtered), so rows in = out + rejected + routed on every line.
COUNTS = ("rows_in", "rows_out", "rows_rejected", "rows_routed", "tokens_out", "chars_out")
TABLE_COUNTS = ["rows_in", "rows_out", "rows_rejected", "rows_routed", "tokens_out"]


@dataclass
class CorpusReport:
    stages: (
        pd.DataFrame
    )  # source, stage, order, rows_in, rows_out, rows_rejected, rows_routed, tokens_out, chars_out
    reasons: pd.DataFrame  # source, stage, reason, rows
    lengths: Histogram  # final corpus, whitespace tokens per document

    @property
    def sources(self) -> list[str]:
        return sorted(self.stages["source"].unique()) if len(self.stages) else []

    def totals(self) -> pd.DataFrame:
        if not len(self.stages):
            return self.stages
        cols = list(COUNTS)
        out = self.stages.groupby(["order", "stage"], as_index=False)[cols].sum()
        return out.sort_values("order").drop(columns="order")

    def markdown(self) -> str:
        totals = self.totals()
        parts = [
            f"# Corpus report\n\n{len(self.sources)} sources: {', '.join(self.sources) or 'none'}\n",
            "## Documents and tokens per stage (all sources)\n",
            markdown.table(
                ["stage", "rows in", "rows out", "rejected", "routed elsewhere", "tokens out"],
                totals[
                    ["stage", "rows_in", "rows_out", "rows_rejected", "rows_routed", "tokens_out"]
                ].itertuples(index=False),
            )
            if len(totals)
            else "_no stage has run yet_",
        ]
        if len(totals) and totals["rows_routed"].any():
            parts.append(
                f"\nRows in: what a stage took from its upstream. Routed elsewhere: upstream rows another "
                f"stage takes instead (documents in other languages than the main ones go from "
                f"{HEURISTIC_FILTERED} to {MULTILINGUAL_FILTERED}, beside the chain).\n"
            )
        if len(self.stages):
            final = self.stages[self.stages["stage"] == TEXT_STAGES[-1]]
            first = self.stages[self.stages["stage"] == TEXT_STAGES[0]]
            per_source = first[["source", "rows_out"]].merge(
                final[["source", "rows_out", "tokens_out"]],
                on="source",
                how="left",
                suffixes=("_raw", "_final"),
            )
            per_source["kept"] = (per_source["rows_out_final"] / per_source["rows_out_raw"]).map(
                lambda v: "" if pd.isna(v) else f"{v:.1%}"
            )
            parts += [
                "\n## Per source (raw → final)\n",
                markdown.table(
                    ["source", "raw docs", "final docs", "final tokens", "kept"],
                    per_source.itertuples(index=False),
                ),
            ]
        if len(self.reasons):
            top = (
                self.reasons.groupby(["stage", "reason"], as_index=False)["rows"]
                .sum()
                .sort_values(["rows", "stage"], ascending=[False, True])
            )
            parts += [
                "\n## Removal reasons (all sources)\n",
                markdown.table(["stage", "reason", "rows"], top.itertuples(index=False)),
            ]
        parts += [
            "\n## Final corpus: document length (whitespace tokens)\n",
            markdown.bars(self.lengths.rows()),
        ]
        return "\n".join(parts) + "\n"


def build_report(storage: Storage | AnyStorage, stages: list[str] = REPORT_STAGES) -> CorpusReport:
    rows, reason_rows = [], []
    lengths = Histogram(LENGTH_EDGES)
    for order, stage in enumerate(stages):
        for source, stats in storage.read_stats(stage).items():
            rows.append(
                {
                    "source": source,
                    "stage": stage,
                    "order": order,
                    **{k: stats.get(k, 0) for k in COUNTS},
                }
            )
            reason_rows += [
                {"source": source, "stage": stage, "reason": r, "rows": n}
                for r, n in Counter(stats.get("reasons", {})).items()
            ]
            if stage == stages[-1] and "length_tokens" in stats:
                lengths.counts += np.asarray(stats["length_tokens"]["counts"], dtype=np.int64)
    stage_frame = pd.DataFrame(
        rows,
        columns=["source", "stage", "order", *COUNTS],
    )
    reason_frame = pd.DataFrame(reason_rows, columns=["source", "stage", "reason", "rows"])
    return CorpusReport(
        stage_frame.sort_values(["source", "order"]).reset_index(drop=True), reason_frame, lengths
    )


def publish_report(storage: AnyStorage, reports: Path) -> dict:
    """Build the report, write its tables (under the storage root, each written whole) and Markdown,
    refresh the DuckDB catalog (a local root) or list the views (an object store); returns what the
    corpus_report asset shows."""
    report = build_report(storage)
    provenance = {"asset": CORPUS_REPORT, "stages": list(REPORT_STAGES)}
    for name, frame in (("stages", report.stages), ("reasons", report.reasons)):
        storage.write_table(
            CORPUS_REPORT, pa.Table.from_pandas(frame, preserve_index=False), provenance, name
        )
    text = report.markdown()
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "corpus_report.md").write_text(text)
    totals = report.totals()
    final = totals[totals["stage"] == TEXT_STAGES[-1]]
    return {
        "sources": len(report.sources),
        "final_documents": int(final["rows_out"].sum()) if len(final) else 0,
        "final_tokens": int(final["tokens_out"].sum()) if len(final) else 0,
        "report": Markdown(text),
        "report_file": FilePath.of(reports / "corpus_report.md"),
        **_sql(storage, reports),
    }


def _sql(storage: AnyStorage, reports: Path) -> dict:
    """The report's SQL entry: a DuckDB catalog file over a local root's Parquet; on an object store
    the names of the views ``refinery sql`` registers (a catalog file cannot hold them)."""
    from refinery.sql import views, write_catalog
    from refinery.sql_views import storage_views

    if is_object(storage):
        return {
            "sql_views": Json(sorted(storage_views(storage.fs, storage.base))),
            "sql": f"`refinery sql` with $REFINERY_STORAGE_ROOT at {storage.uri(storage.base)}, or "
            "refinery.sql.connect(root): views registered on a connection over the manifests' parts "
            "(a DuckDB catalog file cannot hold them)",
        }
    catalog = reports / "catalog.duckdb"
    write_catalog(storage.root, catalog)
    return {"duckdb_catalog": FilePath.of(catalog), "sql_views": Json(views(storage.root))}
