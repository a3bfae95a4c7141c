"""What every stage reports: the figures a user checks first, as :mod:`refinery.metadata` values.

A user opening a stage sees rows in and out, what was removed and why, time and throughput,
the parameters, a few kept and rejected rows, score distributions, and where the files are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from refinery import __version__, markdown
from refinery.kernel.runner import StageRun
from refinery.metadata import FilePath, Json, Markdown

PREVIEW_COLUMNS = 3


def provenance(asset: str, partition: str, params: BaseModel | None) -> dict:
    """Written into each Parquet file: what made it. No run ids or clocks, so unchanged input
    re-materializes to identical bytes."""
    return {
        "asset": asset,
        "partition": partition,
        "refinery": __version__,
        "params": params.model_dump() if params is not None else {},
    }


def sample_table(rows: list[dict], columns: Sequence[str], text_column: str = "text") -> str:
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


def top_reasons(reasons: Mapping[str, int], limit: int = 3) -> str:
    """The most frequent removal reasons as one line, e.g. ``exact_duplicate 12, c4.min_lines 3``."""
    ordered = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    more = len(reasons) - len(ordered)
    return ", ".join(f"{r} {n:,}" for r, n in ordered) + (f", +{more} more" if more > 0 else "")


def counts_table(counts: Mapping[Any, int], unit: str = "rows") -> Markdown:
    """A value → count table, most frequent first."""
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return Markdown(markdown.table(["value", unit], rows) if rows else "_none_")


def stage_metadata(
    run: StageRun, params: BaseModel | None, score_columns: Sequence[str] = ()
) -> dict[str, Any]:
    """The standard figures of one materialized partition."""
    s = run.stats
    text_column = s.text_column or "text"
    meta: dict[str, Any] = {
        "rows_in": s.rows_in,
        "rows_out": s.rows_out,
        "rows_rejected": s.rows_rejected,
        "kept_fraction": round(s.rows_out / s.rows_in, 4) if s.rows_in else 0.0,
        "tokens_out": s.tokens_out,
        "removed_by_reason": Markdown(markdown.reasons(dict(s.reasons), s.rows_in)),
        "top_reasons": top_reasons(s.reasons),
        "seconds": round(run.seconds, 3),
        "mb_per_second": round(run.mb_per_s, 2),
        "output": FilePath.of(run.path),
        "rejected": FilePath.of(run.rejected_path),
        "sample_kept": Markdown(
            sample_table(s.sample_kept, list(score_columns)[:PREVIEW_COLUMNS], text_column)
        ),
        "sample_rejected": Markdown(
            sample_table(s.sample_rejected, ["reason", "reason_detail"], text_column)
        ),
        "length_tokens": Markdown(markdown.bars(s.length_tokens.rows())),
    }
    if s.rows_routed:
        meta["rows_routed_elsewhere"] = s.rows_routed
    if params is not None:
        meta["parameters"] = Json(params.model_dump())
    for name, hist in s.histograms.items():
        meta[f"distribution_{name}"] = Markdown(markdown.bars(hist.rows()))
    return meta


def inbox_metadata(run: StageRun, folder: Path, unit: str = "rows") -> tuple[dict[str, Any], list[str]]:
    """What every ingest stage shows about its inbox folder, and the warnings to log: an empty
    partition is a warning rather than a failure, since a source folder may be created before its
    files arrive."""
    extra = run.stats.extra
    warnings = []
    if not extra["folder_exists"]:
        warnings.append(f"inbox folder {folder} does not exist: empty partition")
    elif run.stats.rows_in == 0:
        warnings.append(f"source {run.partition!r} holds no {unit}: empty partition")
    files = sorted(extra["files"].items())
    meta = {
        "inbox": FilePath.of(folder),
        "files": Markdown(markdown.table(["file", unit], files) if files else "_no files_"),
        "input_bytes": extra["input_bytes"],
    }
    return meta, warnings


def withdrawn_claims(withdrawn: list[str], limit: int = 20) -> dict[str, Any]:
    """Documents that left a partition may have been the kept copy of another's duplicate: the
    partitions that dropped a copy in their favour should be re-materialized."""
    return {
        "claims_withdrawn": len(withdrawn),
        "claims_withdrawn_sample": Markdown(
            "\n".join(f"- {k}" for k in withdrawn[:limit])
            if withdrawn
            else "_none: no document left this partition_"
        ),
    }
