"""What every text stage reports in the UI, and the invariant checks it emits.

A user opening an asset sees first: rows in/out, removed by reason, time and throughput, the
parameters, a few kept and rejected rows, score distributions, and where the files are. Each
stage also checks, from the files it wrote rather than its own counters, that ids are unique,
no text is empty, and every input row is either kept or rejected with a reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel

from refinery import __version__, markdown
from refinery.stage import StageRun
from refinery.storage import Storage

CHECKS = ("unique_ids", "non_empty_text", "rows_accounted")
PREVIEW_COLUMNS = 3


def check_specs(asset: str, text_column: str = "text") -> list[dg.AssetCheckSpec]:
    descriptions = {
        "unique_ids": "Every id appears once in the output.",
        "non_empty_text": f"No output row has an empty or whitespace-only '{text_column}'.",
        "rows_accounted": "Input rows = output rows + rejected rows (read back from the files).",
    }
    return [
        dg.AssetCheckSpec(name, asset=asset, blocking=True, description=descriptions[name]) for name in CHECKS
    ]


STAGE_KINDS = frozenset({"python", "parquet"})


def stage_family(
    partitions_def: dg.PartitionsDefinition, group_name: str, text_column: str = "text"
) -> Callable:
    """The decorator for one family of partitioned stages (one inbox kind): every stage of it shares
    the partitions, the group and the column the invariant checks read, so only what differs is
    written at each asset."""

    def stage(name: str, *, kinds: set[str] | None = None, **asset_args) -> Callable:
        return dg.asset(
            name=name,
            partitions_def=partitions_def,
            group_name=group_name,
            kinds={*STAGE_KINDS, *(kinds or ())},
            check_specs=check_specs(name, text_column=text_column),
            **asset_args,
        )

    return stage


def provenance(asset: str, partition: str, params: BaseModel | None) -> dict:
    """Written into each Parquet file: what made it. No run ids or clocks, so unchanged input
    re-materializes to identical bytes."""
    return {
        "asset": asset,
        "partition": partition,
        "refinery": __version__,
        "params": params.model_dump() if params is not None else {},
    }


def invariant_checks(run: StageRun, rows_in: int, text_column: str = "text") -> list[dg.AssetCheckResult]:
    path = run.path
    ids = pq.read_table(path, columns=["id"]).column("id")
    distinct = pc.count_distinct(ids).as_py() if len(ids) else 0
    empty = 0
    for batch in pq.ParquetFile(path).iter_batches(columns=[text_column], batch_size=20_000):
        column = batch.column(0)
        trimmed = pc.utf8_trim_whitespace(column)
        empty += int(pc.sum(pc.equal(pc.utf8_length(trimmed), 0)).as_py() or 0) + column.null_count
    out = pq.ParquetFile(path).metadata.num_rows
    rejected = pq.ParquetFile(run.rejected_path).metadata.num_rows
    return [
        dg.AssetCheckResult(
            check_name="unique_ids",
            passed=distinct == len(ids),
            metadata={"rows": len(ids), "distinct_ids": distinct},
        ),
        dg.AssetCheckResult(check_name="non_empty_text", passed=empty == 0, metadata={"empty_rows": empty}),
        dg.AssetCheckResult(
            check_name="rows_accounted",
            passed=rows_in == out + rejected,
            metadata={"rows_in": rows_in, "rows_out": out, "rows_rejected": rejected},
        ),
    ]


def _sample_table(rows: list[dict], columns: Sequence[str], text_column: str = "text") -> str:
    """A few rows: id, chosen columns, and the text (or the raw bytes of quarantined input)."""
    if not rows:
        return "_none_"
    present = [c for c in columns if c in rows[0]]
    return markdown.table(
        ["id", *present, text_column],
        [
            (
                r.get("id"),
                *[r.get(c) for c in present],
                markdown.preview(r.get(text_column) if isinstance(r.get(text_column), str) else r.get("raw")),
            )
            for r in rows
        ],
    )


def counts_table(counts: dict, unit: str = "rows") -> dg.MetadataValue:
    """A value → count table, most frequent first."""
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return dg.MetadataValue.md(markdown.table(["value", unit], rows) if rows else "_none_")


def inbox_metadata(
    context: dg.AssetExecutionContext, run: StageRun, folder: Path, unit: str = "rows"
) -> dict:
    """What every raw (ingest) asset shows about its inbox folder; an empty partition is logged as
    a warning rather than failing, since a source folder may be created before its files arrive."""
    extra = run.stats.extra
    if not extra["folder_exists"]:
        context.log.warning(f"inbox folder {folder} does not exist: empty partition")
    elif run.stats.rows_in == 0:
        context.log.warning(f"source {run.partition!r} holds no {unit}: empty partition")
    files = sorted(extra["files"].items())
    return {
        "inbox": dg.MetadataValue.path(str(folder)),
        "files": dg.MetadataValue.md(markdown.table(["file", unit], files) if files else "_no files_"),
        "input_bytes": extra["input_bytes"],
    }


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema])


def stage_metadata(
    run: StageRun, params: BaseModel | None, score_columns: Sequence[str] = (), extra: dict | None = None
) -> dict:
    s = run.stats
    meta = {
        "dagster/row_count": s.rows_out,
        "dagster/column_schema": column_schema(run.schema),
        "rows_in": s.rows_in,
        "rows_out": s.rows_out,
        "rows_rejected": s.rows_rejected,
        "kept_fraction": round(s.rows_out / s.rows_in, 4) if s.rows_in else 0.0,
        "tokens_out": s.tokens_out,
        "removed_by_reason": dg.MetadataValue.md(markdown.reasons(dict(s.reasons), s.rows_in)),
        "seconds": round(run.seconds, 3),
        "mb_per_second": round(run.mb_per_s, 2),
        "output": dg.MetadataValue.path(str(run.path)),
        "rejected": dg.MetadataValue.path(str(run.rejected_path)),
        "sample_kept": dg.MetadataValue.md(
            _sample_table(s.sample_kept, list(score_columns)[:PREVIEW_COLUMNS], s.text_column or "text")
        ),
        "sample_rejected": dg.MetadataValue.md(
            _sample_table(s.sample_rejected, ["reason", "reason_detail"], s.text_column or "text")
        ),
        "length_tokens": dg.MetadataValue.md(markdown.bars(s.length_tokens.rows())),
    }
    if params is not None:
        meta["parameters"] = dg.MetadataValue.json(params.model_dump())
    for name, hist in s.histograms.items():
        meta[f"distribution_{name}"] = dg.MetadataValue.md(markdown.bars(hist.rows()))
    meta.update(extra or {})
    return meta


def materialize_stage(
    context: dg.AssetExecutionContext,
    storage: Storage,
    run: StageRun,
    rows_in: int,
    params: BaseModel | None,
    score_columns: Sequence[str] = (),
    extra: dict | None = None,
    summary_extra: Callable[[], dict] | None = None,
    text_column: str = "text",
) -> dg.MaterializeResult:
    """Write the stats file, log the headline, and return metadata plus check results.

    ``text_column`` must match the one given to ``check_specs`` and ``run_stage``.
    """
    summary = run.stats.summary()
    if summary_extra:
        summary.update(summary_extra())
    storage.write_stats(run.asset, run.partition, summary)
    context.log.info(
        f"{run.asset}[{run.partition}]: {run.stats.rows_in} in, {run.stats.rows_out} out, "
        f"{run.stats.rows_rejected} rejected in {run.seconds:.2f}s"
    )
    return dg.MaterializeResult(
        metadata=stage_metadata(run, params, score_columns, extra),
        check_results=invariant_checks(run, rows_in, text_column),
    )
