"""WARC files (``.warc``, ``.warc.gz``) as a stream of HTML payloads, every record accounted for.

Read with FastWARC (Rust; 2.4–2.8× faster than warcio on the same file, see
``benchmarks/bench_parsing.py``), one record at a time, so a multi-gigabyte crawl file never sits
in memory. Each record becomes one :class:`WarcEntry` whose ``action`` says what the reader does:

- ``document``: an HTML response (``text/html`` or ``application/xhtml+xml``, or no content type
  and a body that starts like HTML) with a 2xx status, or an HTML ``resource`` record;
- ``skip``: not a document — ``warcinfo``, ``request``, ``metadata``, ``revisit``, ``conversion``,
  ``continuation`` records, non-HTML responses (images, PDFs, JSON…) and non-2xx responses. They
  are counted per kind (``skip_key``), not quarantined: they are the normal content of a crawl,
  not bad input, and stay in the inbox file;
- ``quarantine``: a record that should be a document and is broken — cut off by the end of the
  file (``warc_truncated_record``), larger than the limit before or after content decoding
  (``oversized``: gzip bombs stop at the limit), or with a content/transfer encoding that does not
  decode (``undecodable_bytes``).

Bodies are read raw (FastWARC's own decoding cannot stop part-way through a record) and decoded
here in bounded steps: at most ``max_bytes`` are read or inflated per record, ever.

Parsing is strict (FastWARC's quirks mode off): in quirks mode garbage between records is skipped
without a trace, whereas strict parsing stops there and the reader records a ``corrupt_archive``
row naming the last good record — the rest of the file stays in the inbox, visibly unread.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

WARC_SUFFIXES = (".warc.gz", ".warc")
HTML_TYPES = ("text/html", "application/xhtml+xml")
_HTML_START = re.compile(
    rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)", re.IGNORECASE | re.DOTALL
)
READ_CHUNK = 1 << 20


@dataclass
class WarcEntry:
    ordinal: int  # 1-based position of the record in the file
    record_type: str
    action: str  # document | skip | quarantine
    url: str | None = None
    body: bytes | None = None  # decoded payload for documents; what was read for quarantine rows
    http_charset: str | None = None
    meta: dict = field(default_factory=dict)
    skip_key: str | None = None
    reason: str | None = None
    detail: str | None = None


class BodyTooLarge(ValueError):
    pass


def read_at_most(read, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes from ``read(n)``; (data, True when more was there)."""
    parts, size = [], 0
    while size <= limit:
        chunk = read(min(READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    data = b"".join(parts)
    if len(data) > limit:
        return data[:limit], True
    return data, False


def decode_content_encoding(data: bytes, encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate, br), inflating at most ``limit`` bytes.

    Raises :class:`BodyTooLarge` past the limit (a decompression bomb stops there, having used
    ``limit`` bytes of memory), ``ValueError`` for a corrupt stream or an unknown encoding.
    """
    encodings = [e.strip().lower() for e in encoding.split(",") if e.strip()]
    for enc in reversed(encodings):  # applied in order, so undone in reverse
        if enc in ("identity", "none"):
            continue
        if enc in ("gzip", "x-gzip"):
            data = _inflate(data, 16 + zlib.MAX_WBITS, limit)
        elif enc == "deflate":
            try:
                data = _inflate(data, zlib.MAX_WBITS, limit)
            except zlib.error:  # servers send raw deflate under this name too
                data = _inflate(data, -zlib.MAX_WBITS, limit)
        elif enc == "br":
            data = _unbrotli(data, limit)
        else:
            raise ValueError(f"unsupported Content-Encoding {enc!r}")
    return data


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    out, size = [], 0
    while data:
        inflater = zlib.decompressobj(wbits)
        pending = data
        while pending:
            chunk = inflater.decompress(pending, limit + 1 - size)
            out.append(chunk)
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"inflates past {limit} bytes")
            pending = inflater.unconsumed_tail
            if not chunk and not pending:
                break
        if not inflater.eof:
            raise zlib.error("compressed stream ends early")
        data = inflater.unused_data if wbits > 16 else b""  # gzip: further members follow
    return b"".join(out)


def _unbrotli(data: bytes, limit: int) -> bytes:
    try:
        import brotli
    except ImportError as err:  # pragma: no cover - brotli is installed with urllib3[brotli] here
        raise ValueError("Content-Encoding br needs the brotli package") from err
    decompressor = brotli.Decompressor()
    try:
        out = decompressor.process(data, output_buffer_limit=limit + 1)
    except brotli.error as err:
        raise ValueError(f"brotli: {err}") from err
    if len(out) > limit:
        raise BodyTooLarge(f"inflates past {limit} bytes")
    if not decompressor.is_finished():
        raise ValueError("brotli stream ends early")
    return out


def dechunk(data: bytes, limit: int) -> bytes:
    """Undo ``Transfer-Encoding: chunked``; ``ValueError`` when the framing is broken."""
    out, size, pos = [], 0, 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise ValueError("chunked body: missing chunk size line")
        try:
            length = int(data[pos:end].split(b";")[0].strip(), 16)
        except ValueError as err:
            raise ValueError(f"chunked body: bad chunk size {data[pos:end][:20]!r}") from err
        pos = end + 2
        if length == 0:
            return b"".join(out)
        if pos + length > len(data):
            raise ValueError("chunked body: chunk runs past the end")
        size += length
        if size > limit:
            raise BodyTooLarge(f"chunked body past {limit} bytes")
        out.append(data[pos : pos + length])
        pos += length + 2


def is_html(content_type: str | None, body: bytes) -> bool:
    if content_type:
        return content_type.split(";")[0].strip().lower() in HTML_TYPES
    return bool(_HTML_START.match(body[:4096]))


def iter_warc(path: Path, max_bytes: int) -> Iterator[WarcEntry]:
    """Every record of a WARC file as a :class:`WarcEntry`.

    A stream that cannot be parsed any further (corrupt gzip member, garbage where a header
    should be) raises ``OSError`` after the entries read so far; the caller records where.
    """
    from fastwarc.warc import ArchiveIterator

    with path.open("rb") as stream:
        records = ArchiveIterator(stream, parse_http=True, auto_decode="none", quirks_mode=False)
        for ordinal, record in enumerate(records, start=1):
            yield _entry(ordinal, record, max_bytes)


def _entry(ordinal: int, record, max_bytes: int) -> WarcEntry:
    kind = str(record.record_type)
    headers = record.headers
    meta = {
        "warc_record_id": record.record_id,
        "warc_date": headers.get("WARC-Date"),
        "warc_type": kind,
    }
    url = headers.get("WARC-Target-URI")
    entry = WarcEntry(ordinal, kind, "skip", url=url, meta=meta)
    if kind not in ("response", "resource"):
        entry.skip_key = f"warc:{kind}"
        return entry
    if kind == "response" and not record.is_http:
        entry.skip_key = "warc:response_not_http"
        return entry
    http = record.http_headers if kind == "response" else None
    content_type = record.http_content_type if http is not None else headers.get("Content-Type")
    status = http.status_code if http is not None else None
    meta.update({"http_status": status, "content_type": content_type})
    if truncated := headers.get("WARC-Truncated"):
        meta["warc_truncated"] = truncated  # the crawler cut the payload; what is there is kept
    if status is not None and not 200 <= status < 300:
        entry.skip_key = f"warc:http_status_{status}"
        return entry
    if content_type and not is_html(content_type, b""):
        entry.skip_key = f"warc:non_html:{content_type.split(';')[0].strip().lower()}"
        return entry
    declared = record.content_length
    raw, more = read_at_most(record.reader.read, max_bytes)
    if more:
        entry.action, entry.reason = "quarantine", "oversized"
        entry.detail = f"payload of {declared} bytes > max_record_bytes {max_bytes}"
        return entry
    if len(raw) < declared:
        entry.action, entry.reason, entry.body = "quarantine", "warc_truncated_record", raw
        entry.detail = f"record ends after {len(raw)} of {declared} payload bytes (file cut off)"
        return entry
    body = raw
    try:
        if http is not None and "chunked" in (http.get("Transfer-Encoding") or "").lower():
            body = dechunk(body, max_bytes)
        if http is not None and (encoding := http.get("Content-Encoding")):
            meta["content_encoding"] = encoding
            body = decode_content_encoding(body, encoding, max_bytes)
    except BodyTooLarge as err:
        entry.action, entry.reason, entry.body = "quarantine", "oversized", None
        entry.detail = f"decoded payload {err} (max_record_bytes {max_bytes}); left in the WARC file"
        return entry
    except (ValueError, zlib.error) as err:
        entry.action, entry.reason, entry.body = "quarantine", "undecodable_bytes", raw
        entry.detail = f"content/transfer encoding does not decode: {err}"
        return entry
    if not content_type and not is_html(None, body):
        entry.skip_key = "warc:non_html:unknown"
        return entry
    entry.action, entry.body = "document", body
    entry.http_charset = record.http_charset if http is not None else None
    return entry
