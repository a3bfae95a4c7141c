"""Reading one source folder of the SFT inbox into normalised records and quarantine rows.

Built on the text inbox's :class:`~refinery.ingest.text_reader.SourceReader`, so byte-level
failures (malformed JSON, undecodable bytes, truncated archives, unreadable Parquet, UTF-16
files, oversized lines) are quarantined exactly as for text, with file, line and raw bytes.
What differs is the record: instead of a ``text`` field, each object is recognised as one of
the SFT dialects by :func:`refinery.sft.normalize.normalize` or quarantined with its reason.
Files may also be a JSON array (``alpaca_data.json`` ships that way) or one JSON object.
"""

from __future__ import annotations

import codecs
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from pydantic import Field, field_validator

from refinery.ingest.text_reader import ReaderParams, SourceReader
from refinery.kernel.collector import MAX_RAW_FILE_BYTES, IngestBatch
from refinery.kernel.report import counts_table
from refinery.kernel.surrogates import lone_surrogate, may_hold_surrogates
from refinery.sft.dedup_keys import DEFAULT_DEDUP_KEYS, complete_keys, record_key
from refinery.sft.normalize import Malformed, meta_json, normalize
from refinery.sft.schema import KEY_COLUMN, SFT_QUARANTINE_SCHEMA, SFT_SCHEMA
from refinery.sft.schema import TEXT_COLUMN as PROMPT_COLUMN

SFT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


class SftIngestParams(ReaderParams):
    """How the SFT inbox is read, and what each record will be compared on downstream."""

    max_document_chars: int = Field(
        200_000, description="Records whose texts (all turns and responses) exceed this are quarantined."
    )
    dedup_key: dict[str, str] = Field(
        dict(DEFAULT_DEDUP_KEYS),
        description="Per kind, what fills dedup_text (compared by sft_checked's dedup, embedded by "
        "sft_selected): 'prompt' (first user turn), 'user_turns' (every user turn), 'conversation' "
        "(every turn with its role), 'prompt_responses' (the context, then every compared answer). "
        "Kinds left out keep their default.",
    )

    @field_validator("dedup_key", mode="before")
    @classmethod
    def _complete(cls, value: dict | None) -> dict[str, str]:
        return complete_keys(value)


class SftReader(SourceReader):
    """Iterate :meth:`batches` (``documents`` hold SFT rows), then read :attr:`stats`."""

    SUFFIXES = SFT_SUFFIXES
    SCHEMA = SFT_SCHEMA
    QUARANTINE_SCHEMA = SFT_QUARANTINE_SCHEMA
    TEXT_COLUMN = PROMPT_COLUMN
    PARQUET_COLUMNS = ()  # the dialect decides which fields a record needs

    def __init__(self, folder: Path, source: str, params: SftIngestParams | None = None):
        super().__init__(folder, source, params or SftIngestParams())
        self.kinds: Counter = Counter()  # admitted records per kind and per input format
        self.formats: Counter = Counter()

    def report(self) -> dict:
        return {
            "kinds": counts_table(self.kinds, "records"),
            "formats": counts_table(self.formats, "records"),
        }

    def summary(self) -> dict:
        return {"kinds": dict(self.kinds), "formats": dict(self.formats)}

    def _read_file(self, path: Path, rel: str, kind: str) -> Iterator[IngestBatch]:
        if kind == ".json":
            yield from self._read_json(path, rel)
        else:
            yield from super()._read_file(path, rel, kind)

    def _admit(self, record: object, rel: str, line: int, raw: bytes | None) -> None:
        if raw is None:  # Parquet rows and JSON-array items: keep the record as JSON
            raw = json.dumps(record, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
        if not isinstance(record, dict):
            self._quarantine(
                rel, line, "not_an_object", f"expected a JSON object, got {type(record).__name__}", raw
            )
            return
        given = record.get("id")
        shown_id = str(given) if isinstance(given, str | int) and not isinstance(given, bool) else None
        try:
            rec = normalize(record)
        except Malformed as err:  # the id as given, so the record can be found in its file
            self._quarantine(rel, line, err.reason, err.detail, raw, doc_id=shown_id, kind=err.kind)
            return
        if not rec.prompt.strip():  # raw_sft's blocking check: no empty text column in the output
            self._quarantine(rel, line, "empty_prompt", "prompt is empty or whitespace", raw, kind=rec.kind)
            return
        size = sum(len(t) for t in rec.texts())
        if size > self.params.max_document_chars:
            self._quarantine(
                rel,
                line,
                "oversized",
                f"{size} characters > max_document_chars {self.params.max_document_chars}",
                raw,
                doc_id=shown_id,
                text=rec.prompt[:1000],
                kind=rec.kind,
            )
            return
        if record.get("id") is not None:
            doc_id, error = self._ids.explicit(record["id"])
            if error:
                self._quarantine(
                    rel,
                    line,
                    error.split(":")[0],
                    error,
                    raw,
                    doc_id=shown_id,
                    text=rec.prompt,
                    kind=rec.kind,
                )
                return
        else:
            canonical = json.dumps(
                [rec.kind, rec.messages, rec.responses], ensure_ascii=False, sort_keys=True
            )
            doc_id = self._ids.derived(canonical)
        self.stats.files[rel] += 1
        self.stats.documents += 1
        self.kinds[rec.kind] += 1
        self.formats[rec.format] += 1
        self._batch.documents.append(
            {
                "id": doc_id,
                "source": self.source,
                "kind": rec.kind,
                "format": rec.format,
                "system": rec.system,
                "prompt": rec.prompt,
                "response": rec.response,
                "rejected_response": rec.rejected_response,
                "messages": json.dumps(rec.messages, ensure_ascii=False),
                "responses": None if rec.responses is None else json.dumps(rec.responses, ensure_ascii=False),
                "turns": rec.turns,
                "quality": rec.quality,
                "meta": meta_json(record, rec.consumed),
                KEY_COLUMN: record_key(rec, self.params.dedup_key),
                "file": rel,
                "line": line,
            }
        )

    # -- formats beyond the text inbox's ---------------------------------------------------------
    def _read_json(self, path: Path, rel: str) -> Iterator[IngestBatch]:
        """A JSON array of records or one object; a file of JSON lines named .json also works."""
        data = path.read_bytes()
        raw_file = data if len(data) <= MAX_RAW_FILE_BYTES else None
        try:
            text = (
                data.decode("utf-16")
                if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
                else (data.decode("utf-8-sig"))
            )
        except UnicodeDecodeError as err:
            self._quarantine(
                rel, None, "undecodable_bytes", f"not valid {err.encoding} at byte {err.start}", raw_file
            )
            return
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as err:
            if text.lstrip().startswith("{") and err.msg == "Extra data":  # JSON lines in a .json file
                yield from self._read_jsonl(path, rel)  # decodes UTF-16 as the text inbox does
                return
            self._quarantine(
                rel, None, "malformed_json", f"{err.msg} at line {err.lineno} column {err.colno}", raw_file
            )
            return
        except ValueError as err:  # an integer past Python's 4300-digit limit
            self._quarantine(rel, None, "malformed_json", str(err), raw_file)
            return
        records = parsed if isinstance(parsed, list) else [parsed]
        check_unicode = may_hold_surrogates(text)
        for number, record in enumerate(records, start=1):
            where = lone_surrogate(record) if check_unicode else None
            if where:  # valid JSON, but not text UTF-8 (and so Parquet) can hold
                raw = json.dumps(record, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
                self._quarantine(rel, number, "invalid_unicode", f"lone surrogate in {where[:200]}", raw)
            else:
                self._admit(record, rel, number, None)
            yield from self._drain(final=False)

    def _parquet_record(self, record: dict) -> dict:
        # A column this row does not use is null, not a field of the record.
        return {k: v for k, v in record.items() if v is not None}
