"""`refinery plan`: what the inbox at hand (or a target size) needs, per stage, on a target cluster.

Before a run, from the rates measured in ``benchmarks/`` (``benchmarks/rates/*.json``, written by
the benchmarks or transcribed from ``benchmarks/RESULTS.md`` with their source named), it prints per
stage the CPU hours, the wall hours on ``nodes × cores``, the memory of one task and of the Dagster
step (the driver), and the disk written; it warns when a step's memory exceeds a node's. The inbox
is sampled: every file's size is read, a few files per source are opened to count documents.

The memory model is the code's own, per document: a MinHash signature is ``4·num_perm`` bytes and
13 band rows 234 bytes; ``exact_`` and ``fuzzy_deduplicated``'s step claims from the key parts the
workers wrote (content hashes, signatures), one slice at a time, and the workers write the rows;
perplexity's merges one quantile sketch per part (at most 16 KB each); the embeddings run on a pool
of model actors whose per-slice tasks write the parts, so the step holds per-slice metadata only
and an actor one model and one batch; ``corpus_fuzzy_dedup``'s step holds per-piece metadata only
and its tasks a bounded share.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from refinery.dedup.corpus_shuffle import BAND_ROWS_PER_REDUCER

SIGNATURE_BYTES = 512  # 128 permutations × 4 B
SKETCH_BYTES = 16_000  # a part's quantile sketch, at most (refinery.quantiles, real text: ~2 KB)
BAND_ROW_BYTES = 18
BANDS = 13
SHUFFLE_BYTES_PER_DOC = 800  # measured on the files (docs/dedup.md)
EMBEDDING_BYTES = 384 * 4
DRIVER_BASE_MB = 400  # the Dagster step with Ray attached, measured: 361 MB
SAMPLE_FILES = 20
LINE_FORMATS = (".jsonl", ".ndjson", ".json")


@dataclass
class Inbox:
    """What the inbox holds: bytes and (estimated) documents per source."""

    sources: dict[str, dict] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(s["bytes"] for s in self.sources.values())

    @property
    def documents(self) -> int:
        return sum(s["documents"] for s in self.sources.values())

    @property
    def largest(self) -> int:
        return max((s["documents"] for s in self.sources.values()), default=0)


def sample_inbox(folder: Path, sample_files: int = SAMPLE_FILES) -> Inbox:
    """Every source folder's bytes; documents counted in up to ``sample_files`` files per source
    (lines of JSONL, one per other file) and scaled by bytes to the whole source."""
    inbox = Inbox()
    if not folder.is_dir():
        return inbox
    for source in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
        total = sum(f.stat().st_size for f in files)
        sampled = files[:: max(1, len(files) // sample_files)][:sample_files]
        sampled_bytes = sum(f.stat().st_size for f in sampled) or 1
        docs = 0
        for f in sampled:
            if f.suffix in LINE_FORMATS:
                with f.open("rb") as handle:
                    docs += sum(1 for line in handle if line.strip())
            else:
                docs += 1
        inbox.sources[source.name] = {
            "bytes": total,
            "files": len(files),
            "documents": round(docs * total / sampled_bytes) if files else 0,
        }
    return inbox


def load_rates(folder: Path) -> dict[str, dict]:
    rates: dict[str, dict] = {}
    if not folder.is_dir():
        raise FileNotFoundError(f"no measured rates at {folder}: run the benchmarks or pass --rates")
    for path in sorted(folder.glob("*.json")):
        for name, value in json.loads(path.read_text()).items():
            if isinstance(value, dict):
                rates[name] = value
    return rates


@dataclass
class Cluster:
    nodes: int = 4
    cores: int = 16
    memory_gb: float = 64.0
    slice_rows: int = 20_000


@dataclass
class StagePlan:
    stage: str
    cpu_hours: float | None
    wall_hours: float | None
    task_mb: float
    driver_mb: float
    disk_gb: float
    note: str = ""


def plan_stages(
    documents: int, text_bytes: int, largest: int, rates: dict, cluster: Cluster
) -> list[StagePlan]:
    """Per stage: hours from the rates, memory from the code's bytes per document."""
    cores = cluster.nodes * cluster.cores
    mb = text_bytes / 1e6
    doc_bytes = text_bytes / max(documents, 1)
    slice_mb = cluster.slice_rows * doc_bytes * 3 / 1e6 + 150  # a slice's frames, the worker itself
    plans = []

    def hours(name: str) -> tuple[float | None, float | None, str]:
        rate = rates.get(name, {})
        if "mb_s_per_core" in rate:
            cpu = mb / rate["mb_s_per_core"] / 3600
        elif "docs_s_per_core" in rate:
            cpu = documents / rate["docs_s_per_core"] / 3600
        else:
            return None, None, "no rate measured"
        wall = cpu / cores
        serial = rate.get("us_per_doc_serial")
        note = ""
        if serial:
            serial_h = documents * serial / 1e6 / 3600
            if serial_h > wall:
                note = f"claims serialized per index: at least {serial_h:.1f} h whatever the cores"
            wall = max(wall, serial_h)
        return cpu, wall, note

    cpu, wall, note = hours("raw_documents")
    plans.append(
        StagePlan(
            "raw_documents",
            cpu,
            wall,
            slice_mb,
            DRIVER_BASE_MB,
            text_bytes / 1e9,
            (note + "; " if note else "")
            + "a task per inbox file or JSONL byte range; the rate is JSON Lines' "
            "(HTML parses at ~7.4 MB/s per core)",
        )
    )
    for name in (
        "clean_documents",
        "heuristic_filtered",
        "exact_deduplicated",
        "perplexity_scored",
        "quality_scored",
    ):
        cpu, wall, note = hours(name)
        parts = math.ceil(largest / cluster.slice_rows)
        driver = DRIVER_BASE_MB + (parts * SKETCH_BYTES / 1e6 if name == "perplexity_scored" else 0)
        if name == "perplexity_scored":
            note = (
                note + "; " if note else ""
            ) + "scored once on the workers; the step merges one quantile sketch per part"
        plans.append(StagePlan(name, cpu, wall, slice_mb, driver, text_bytes / 1e9, note))
    cpu, wall, note = hours("fuzzy_deduplicated")
    streamed = cluster.slice_rows * SIGNATURE_BYTES / 1e6  # one part of signatures at a time
    plans.append(
        StagePlan(
            "fuzzy_deduplicated",
            cpu,
            wall,
            slice_mb,
            DRIVER_BASE_MB + streamed,
            text_bytes / 1e9,
            (note + "; " if note else "")
            + "signed on the workers, which write the rows; the step claims in order, one part of ids and "
            "signatures at a time",
        )
    )
    cpu, wall, note = hours("corpus_fuzzy_dedup")
    piece_mb = cluster.slice_rows * (SIGNATURE_BYTES + BANDS * BAND_ROW_BYTES + doc_bytes) / 1e6
    reducer_mb = BAND_ROWS_PER_REDUCER * BAND_ROW_BYTES * 3 / 1e6  # the rows and their sort
    plans.append(
        StagePlan(
            "corpus_fuzzy_dedup",
            cpu,
            wall,
            max(piece_mb, reducer_mb) + 150,
            DRIVER_BASE_MB + math.ceil(documents / cluster.slice_rows) * 300 / 1e6,
            documents * SHUFFLE_BYTES_PER_DOC / 1e9,
            note or "every step a shuffle on the workers; the step holds per-piece metadata",
        )
    )
    cpu, wall, note = hours("document_embeddings")
    plans.append(
        StagePlan(
            "document_embeddings",
            cpu,
            wall,
            1_700,
            DRIVER_BASE_MB + math.ceil(largest / cluster.slice_rows) * 300 / 1e6,
            documents * EMBEDDING_BYTES / 1e9,
            (note + "; " if note else "") + "model actors; per-slice tasks write the parts",
        )
    )
    return plans


def warnings_for(plans: list[StagePlan], cluster: Cluster) -> list[str]:
    node_mb = cluster.memory_gb * 1024
    found = []
    for p in plans:
        if p.driver_mb > node_mb:
            found.append(
                f"{p.stage}: the Dagster step needs {p.driver_mb / 1024:.1f} GB, more than a node's "
                f"{cluster.memory_gb:g} GB: split the largest source into more partitions"
            )
        if p.task_mb * cluster.cores > node_mb:
            found.append(
                f"{p.stage}: {cluster.cores} tasks of {p.task_mb:,.0f} MB need more than a node's "
                f"{cluster.memory_gb:g} GB: lower slice_rows or cpus per task"
            )
    return found


def render(inbox: Inbox, scale: float, plans: list[StagePlan], warnings: list[str], cluster: Cluster) -> str:
    lines = [
        f"inbox: {len(inbox.sources)} sources, {inbox.bytes / 1e6:,.1f} MB, ~{inbox.documents:,} documents"
        + (f"; planned ×{scale:,.0f}" if scale != 1 else ""),
        f"cluster: {cluster.nodes} nodes × {cluster.cores} cores, {cluster.memory_gb:g} GB each",
        "",
        "| stage | CPU h | wall h | memory per task MB | step (driver) MB | disk GB | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for p in plans:
        cpu = f"{p.cpu_hours:,.2f}" if p.cpu_hours is not None else "–"
        wall = f"{p.wall_hours:,.2f}" if p.wall_hours is not None else "–"
        memory = f"{p.task_mb:,.0f} | {p.driver_mb:,.0f} | {p.disk_gb:,.2f}"
        lines.append(f"| {p.stage} | {cpu} | {wall} | {memory} | {p.note} |")
    lines += ["", *(f"WARNING: {w}" for w in warnings)] if warnings else []
    return "\n".join(lines)


def default_rates() -> Path:
    return Path(
        os.environ.get("REFINERY_RATES", Path(__file__).resolve().parents[1] / "benchmarks" / "rates")
    )
