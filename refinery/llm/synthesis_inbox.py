"""Handing synthesized pairs to the SFT pipeline: one JSONL file in an SFT inbox source.

The synthesis stage keeps, per document, the JSON list of SFT records it made. After the
partition is written, this collects them into ``inbox/sft/<sft source>/synthesized.jsonl``
(written beside, then renamed into place, so the inbox sensor never sees half a file). From there
the records are an SFT source like any other: raw_sft parses them (OpenAI messages, with
``origin``, ``source_document`` and ``provenance`` kept in ``meta``), sft_checked applies the
rules and dedup, sft_selected selects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from refinery.paths import Layout, check_source_name
from refinery.storage import Storage

SYNTHESIZED_FILE = "synthesized.jsonl"
SOURCE_PREFIX = "llm-"


def sft_source_for(text_source: str, configured: str = "") -> str:
    name = configured or f"{SOURCE_PREFIX}{text_source}"
    check_source_name(name)
    return name


def publish_synthesized(
    storage: Storage, layout: Layout, asset: str, text_source: str, sft_source: str
) -> dict:
    """Write every record of ``asset``'s partition to the SFT inbox source; returns what was written.
    With no record the file is removed (a rerun that yields nothing leaves no stale pairs)."""
    folder = layout.inbox_source("sft", sft_source)
    target = folder / SYNTHESIZED_FILE
    records = 0
    staging = layout.inbox_kind("sft") / f".{sft_source}.{os.getpid()}.tmp"
    staging.parent.mkdir(parents=True, exist_ok=True)
    with staging.open("w", encoding="utf-8") as out:
        for batch in storage.iter_batches(asset, text_source, columns=["sft_records"]):
            for value in batch["sft_records"]:
                for record in json.loads(value or "[]"):
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    records += 1
        out.flush()
        os.fsync(out.fileno())
    if records:
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
    else:
        staging.unlink()
        Path(target).unlink(missing_ok=True)
    return {"sft_source": sft_source, "sft_records_written": records, "sft_inbox_file": str(target)}
