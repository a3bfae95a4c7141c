"""Property tests of every inbox reader: arbitrary files in, and nothing crashes, nothing is lost.

Each example writes a source folder of files with random names (non-UTF-8 bytes and hidden files
included) and suffixes among the accepted ones, filled with JSON lines of arbitrary JSON values
(nested, huge integers, NaN, lone surrogates, BOMs, blank lines), UTF-16, gzip (sometimes
truncated), Parquet tables of random column types, CSV, images and videos (valid, mutated,
random), WebDataset shards with odd member names (sometimes compressed or cut), or plain random
bytes. It then runs the reader through the real writer (:func:`ingest_with_reader` into a
temporary :class:`Storage`) and checks, on the Parquet files written:

- no exception escapes (reading or schema conversion), and the written partition passes the
  blocking invariant checks every ingest asset runs (unique ids, non-empty text, rows accounted);
- every quarantine row has a reason code and a detail; every kept row has an id, unique, and
  a non-empty text column;
- the counts add up: rows written = kept + quarantined = the sum of ``stats.files``, which
  lists every non-hidden file; where the test knows how many records a file holds, that file
  accounts for exactly that many (or, where the format allows it, one row for the whole file);
- every image or video file either has its own row or is named by some row.

Budget: ``REFINERY_FUZZ`` unset runs the ``refinery-ci`` profile (a few dozen examples per
reader, derandomized so CI is stable); ``REFINERY_FUZZ=1`` runs ``refinery-deep`` (random,
``REFINERY_FUZZ_EXAMPLES`` examples per reader, default 2000). Select these tests alone with
``-m fuzz``. The regression tests at the end replay what the deep profile found.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import functools
import gzip
import io
import json
import lzma
import os
import re
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from refinery.ingest.text_reader import IngestParams, SourceReader
from refinery.kernel.checks import invariant_checks
from refinery.kernel.ingest import ingest_with_reader
from refinery.multimodal.image_text_reader import ImageTextIngestParams, ImageTextReader
from refinery.multimodal.video_reader import VideoIngestParams, VideoReaderSource
from refinery.sft.reader import SftIngestParams, SftReader
from refinery.storage import Storage

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
settings.register_profile(
    "refinery-ci",
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=_QUIET,
)
settings.register_profile(
    "refinery-deep",
    max_examples=int(os.environ.get("REFINERY_FUZZ_EXAMPLES", "2000")),
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_QUIET,
)
FUZZ = settings.get_profile("refinery-deep" if os.environ.get("REFINERY_FUZZ") else "refinery-ci")
pytestmark = pytest.mark.fuzz

REASON = re.compile(r"^[a-z][a-z0-9_.]*$")


# -- JSON values -------------------------------------------------------------------------------
class BigLiteral(str):
    """An integer literal longer than Python's int/str conversion limit (4300 digits)."""


ODD_STRINGS = [
    *("NaN", "nan", "Infinity", "-Infinity", "null", "true", "-0", "1e999"),
    *("\ufeff", "\ufeff{}", "\u2028", "\u2029", "\x85", "\x1c", "\x00", "\r", "\t\n", "", " "),
    *("\ud800", "\udfff", "x\udc80y", "\ud83d\ude00", "\U0001f600", "é", "e\u0301"),
    *("../x.png", "/etc/passwd", "a/../../b.png", ".", "Human:", "\n\nHuman: hi\n\nAssistant: yo"),
]
FIELD_NAMES = [
    *("text", "id", "url", "meta", "caption", "image", "image_path", "file_name", "path"),
    *("question", "query", "video", "answer", "messages", "conversations", "role", "content", "from"),
    *("value", "chosen", "rejected", "prompt", "responses", "scores", "score", "rating", "quality"),
    *("instruction", "input", "output", "response", "context", "completion", "system", "type"),
]
# Any str a JSON parser can return: lone surrogates included (they arrive as \\ud800 escapes).
any_text = st.text(st.characters(exclude_categories=()), max_size=24) | st.sampled_from(ODD_STRINGS)


# What Arrow, CSV and file systems can hold: valid Unicode.
def _valid(s: str) -> bool:
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in s)


valid_text = st.text(max_size=24) | st.sampled_from([s for s in ODD_STRINGS if _valid(s)])
integers = st.integers() | st.integers(-(10**400), 10**400) | st.sampled_from([2**63, -(2**63) - 1, 2**64])
scalars = (
    st.none()
    | st.booleans()
    | integers
    | st.floats()
    | any_text
    | st.integers(4301, 5000).map(lambda n: BigLiteral("9" * n))
)
keys = st.sampled_from(FIELD_NAMES) | any_text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=12,
)


def dump(value: object, ascii_only: bool) -> str:
    """JSON text of a value (NaN/Infinity as Python writes them, BigLiteral verbatim)."""
    if isinstance(value, BigLiteral):
        return str.__str__(value)
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=ascii_only)}: {dump(v, ascii_only)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dump(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def with_fields(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """Objects that may carry the reader's fields (with arbitrary values) among arbitrary ones."""
    return st.builds(
        lambda known, other: {**other, **known},
        st.fixed_dictionaries({}, optional=fields),
        st.dictionaries(keys, json_values, max_size=3),
    )


# -- files -------------------------------------------------------------------------------------
@dataclass
class FileSpec:
    """One written file and what the test knows about it: ``records`` it holds (None: unknown);
    ``whole`` allows one row for the whole file instead (line None); ``reason`` must occur."""

    data: bytes
    records: int | None = None
    whole: bool = False
    reason: str | None = None


MAGIC = [
    *(
        b"",
        b"\x1f\x8b",
        codecs.BOM_UTF8,
        codecs.BOM_UTF16_LE,
        codecs.BOM_UTF16_BE,
        b"PAR1",
        b"{",
        b"[",
        b"\n\n",
    ),
    *(b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"RIFF\x00\x00\x00\x00WEBP"),
    *(b"\x00\x00\x00\x18ftypmp42", b"\x1aE\xdf\xa3"),
]


def random_bytes(draw) -> bytes:
    """Random bytes, often behind the magic number of a format some reader sniffs."""
    return draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=300))


def encode_lines(draw, values: list, ascii_only: bool) -> tuple[str, int]:
    """JSON lines with blank lines mixed in; returns (text, non-blank lines)."""
    lines = [dump(v, ascii_only) for v in values]
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["", "  ", "\r", "\t"])))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    return eol.join(lines) + draw(st.sampled_from([eol, ""])), len(values)


@st.composite
def jsonl_file(draw, records: st.SearchStrategy, gz: bool = False) -> FileSpec:
    values = draw(st.lists(records, max_size=6))
    ascii_only = draw(st.booleans())
    text, n = encode_lines(draw, values, ascii_only)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "bom", "utf-16"] if not gz else ["utf-8", "bom"]))
    if encoding == "utf-16":  # whole-file quarantine when a lone surrogate makes it undecodable
        return FileSpec(text.encode("utf-16", "surrogatepass"), n, whole=True)
    data = (codecs.BOM_UTF8 if encoding == "bom" else b"") + text.encode("utf-8", "surrogatepass")
    if not gz:
        return FileSpec(data, n)
    packed = gzip.compress(data, mtime=0)
    cut = draw(st.integers(0, len(packed)))
    if cut >= len(packed):
        return FileSpec(packed, n)
    if cut < 2:  # not even the gzip magic: read as (binary) JSON lines
        return FileSpec(packed[:cut])
    return FileSpec(packed[:cut], reason="corrupt_archive")


ARROW_TYPES = {
    "string": (pa.string(), valid_text),
    "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "float64": (pa.float64(), st.floats()),
    "binary": (pa.binary(), st.binary(max_size=16)),
    "bool": (pa.bool_(), st.booleans()),
    "list": (pa.list_(pa.string()), st.lists(valid_text, max_size=3)),
    "turns": (
        pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])),
        st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant", "system", "gpt", "x"]), "content": valid_text}
            ),
            max_size=4,
        ),
    ),
    "struct": (pa.struct([("a", pa.string()), ("b", pa.int64())]), st.fixed_dictionaries({"a": valid_text})),
    "timestamp": (pa.timestamp("us"), st.datetimes()),
    "null": (pa.null(), st.none()),
}


@st.composite
def parquet_file(draw, names: list[str], required: str | None = None, values: dict | None = None) -> FileSpec:
    """A Parquet table of a few random columns; ``values`` gives a column name its own values."""
    rows = draw(st.integers(0, 5))
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=5))
    columns = {}
    for name in chosen:
        kind = draw(st.sampled_from(sorted(ARROW_TYPES)))
        arrow_type, element = ARROW_TYPES[kind]
        if values and name in values and draw(st.booleans()):
            arrow_type, element = pa.string(), values[name]
        columns[name] = pa.array(
            draw(st.lists(st.none() | element, min_size=rows, max_size=rows)), arrow_type
        )
    table = pa.table(columns) if columns else pa.table({"_": pa.array([None] * rows, pa.null())})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    data = buffer.getvalue()
    if draw(st.integers(0, 9)) == 0:  # cut short: unreadable, quarantined whole
        return FileSpec(data[: draw(st.integers(0, len(data) - 1))], 1, whole=True)
    if required is not None and required not in columns:
        return FileSpec(data, 1, whole=True)
    return FileSpec(data, rows)


def file_names(suffixes: list[str]) -> st.SearchStrategy[str]:
    """Relative names: odd characters, non-UTF-8 bytes (as the file system decodes them), a
    sub-folder sometimes, any case of the suffix."""
    stem = st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\x00" not in b).map(
        os.fsdecode
    ) | st.text(
        st.characters(exclude_characters="/\x00", exclude_categories=("Cs",)), min_size=1, max_size=12
    )
    stem = stem.filter(lambda s: s not in (".", ".."))
    folder = st.sampled_from(["", "", "sub/", "a b/", "déjà/"])
    suffix = st.sampled_from(suffixes).flatmap(lambda s: st.sampled_from([s, s.upper()]))
    return st.builds(lambda f, s, x: f + s + x, folder, stem, suffix)


@st.composite
def source_folder(draw, kinds: dict) -> dict[str, FileSpec]:
    """``{relative name: FileSpec}``: files of the given kinds (suffix -> FileSpec strategy)."""
    count = draw(st.integers(0, 5))
    files: dict[str, FileSpec] = {}
    for _ in range(count):
        suffix = draw(st.sampled_from(sorted(kinds)))
        name = draw(file_names([suffix]))
        if name.lower() not in {n.lower() for n in files}:
            files[name] = draw(kinds[suffix])
    return files


UNSUPPORTED = st.builds(lambda d: FileSpec(d, 1, whole=True), st.binary(max_size=64))
JUNK = st.builds(FileSpec, st.composite(lambda draw: random_bytes(draw))())


# -- running a reader ---------------------------------------------------------------------------
def write_folder(root: Path, files: dict[str, FileSpec | bytes]) -> None:
    for name, spec in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(spec.data if isinstance(spec, FileSpec) else spec)


@dataclass
class Outcome:
    kept: list[dict]
    rejected: list[dict]
    files: Counter
    run: object


def ingest(reader_cls, params, files: dict[str, FileSpec | bytes]) -> Outcome:
    """Write the files, ingest them through the real writer, read back what was written."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "inbox" / "src"
        folder.mkdir(parents=True)
        write_folder(folder, files)
        reader = reader_cls(folder, "src", params)
        run = ingest_with_reader(reader, Storage(Path(tmp) / "storage"), "raw", {"asset": "raw"})
        kept = pq.read_table(run.path).to_pylist()
        rejected = pq.read_table(run.rejected_path).to_pylist()
        assert run.stats.rows_out == len(kept) and run.stats.rows_rejected == len(rejected)
        # The blocking asset checks every ingest asset runs on what it wrote.
        for check in invariant_checks(run, run.stats.rows_in, reader.TEXT_COLUMN):
            assert check.passed, (check.name, check.metadata)
        return Outcome(kept, rejected, reader.stats.files, run)


def shown(name: str) -> str:
    """How a file name appears in rows: bytes that are not UTF-8 escaped as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def visible_files(files: dict) -> dict[str, FileSpec]:
    """The files a reader lists (hidden ones skipped), by the name rows carry."""
    return {shown(n): s for n, s in files.items() if not any(p.startswith(".") for p in n.split("/"))}


def check_outcome(out: Outcome, files: dict[str, FileSpec], text_column: str) -> None:
    files = visible_files(files)
    visible = set(files)
    assert set(out.files) == visible, "stats.files must list every non-hidden file"
    assert sum(out.files.values()) == len(out.kept) + len(out.rejected)
    rows_by_file = Counter(r["file"] for r in out.kept + out.rejected)
    assert rows_by_file == +out.files
    ids = [r["id"] for r in out.kept]
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == len(ids), ids
    for row in out.kept:
        assert isinstance(row[text_column], str) and row[text_column].strip(), row
    for row in out.rejected:
        assert REASON.match(row["reason"]), row["reason"]
        assert isinstance(row["reason_detail"], str) and row["reason_detail"].strip(), row
    for name in visible:
        spec = files[name]
        mine = [r for r in out.rejected if r["file"] == name]
        if spec.records is not None:
            whole = spec.whole and len(mine) == 1 and mine[0]["line"] is None and out.files[name] == 1
            assert out.files[name] == spec.records or whole, (name, out.files[name], spec, mine[:3])
        if spec.reason is not None:
            assert spec.reason in {r["reason"] for r in mine}, (name, mine[:3])


def check_media_named(out: Outcome, files: dict, suffixes: tuple[str, ...], column: str) -> None:
    """Every media file has its own row or is named by a row (as ``image_file``/``video_file``)."""
    named = {r.get(column) for r in out.kept + out.rejected}
    for name in visible_files(files):
        if name.lower().endswith(suffixes):
            assert out.files[name] == 1 or name in named, (name, out.files[name])


# -- the text inbox -----------------------------------------------------------------------------
TEXT_RECORDS = with_fields({"text": json_values | any_text, "id": json_values | any_text, "url": json_values})
TEXT_KINDS = {
    ".jsonl": jsonl_file(TEXT_RECORDS) | JUNK,
    ".jsonl.gz": jsonl_file(TEXT_RECORDS, gz=True) | JUNK,
    ".txt": st.builds(
        lambda text, enc: FileSpec(
            (codecs.BOM_UTF8 if enc == "bom" else b"")
            + text.encode("utf-8" if enc == "bom" else enc, "replace"),
            1,
        ),
        valid_text,
        st.sampled_from(["utf-8", "bom", "utf-16", "latin-1"]),
    )
    | st.builds(lambda d: FileSpec(d, 1), st.binary(max_size=64)),
    ".parquet": parquet_file(["text", "id", "url", "meta", "other"], required="text") | JUNK,
    ".csv": UNSUPPORTED,
    ".json": UNSUPPORTED,
    ".jsonl.bz2": UNSUPPORTED,
    "": UNSUPPORTED,
}


@FUZZ
@given(files=source_folder(TEXT_KINDS), max_chars=st.sampled_from([1_000_000, 20]))
def test_text_reader_accounts_for_every_record(files, max_chars):
    out = ingest(SourceReader, IngestParams(max_document_chars=max_chars, batch_rows=3), files)
    check_outcome(out, files, "text")


# -- the SFT inbox ------------------------------------------------------------------------------
role = (
    st.sampled_from(["user", "assistant", "system", "human", "gpt", "tool", "User", "narrator"]) | json_values
)
content = (
    any_text
    | st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(["text", "image"]) | any_text, "text": any_text})
    )
    | json_values
)
turn = st.fixed_dictionaries({}, optional={"role": role, "from": role, "content": content, "value": content})
turns = st.lists(turn, max_size=5) | json_values
score = st.none() | integers | st.floats() | any_text
SFT_RECORDS = (
    with_fields({"messages": turns, "conversations": turns, "id": json_values, "quality": score})
    | with_fields({"chosen": turns | any_text, "rejected": turns | any_text, "prompt": turns | any_text})
    | with_fields(
        {
            "chosen": st.just("\n\nHuman: hi\n\nAssistant: a"),
            "rejected": st.just("\n\nHuman: hi\n\nAssistant: b"),
            "score_chosen": score,
            "score_rejected": score,
        }
    )
    | with_fields(
        {
            "responses": st.lists(any_text | st.fixed_dictionaries({"text": any_text, "score": score}))
            | json_values,
            "scores": st.lists(score) | json_values,
            "prompt": any_text,
            "question": json_values,
        }
    )
    | with_fields({"instruction": any_text, "output": any_text, "input": json_values, "response": any_text})
    | with_fields(
        {"prompt": any_text, "completion": any_text | json_values, "system": any_text, "score": score}
    )
    | json_values
)


@st.composite
def sft_json_file(draw) -> FileSpec:
    """A .json file: an array, one object, or JSON lines (as alpaca-style dumps come)."""
    shape = draw(st.sampled_from(["array", "object", "lines"]))
    ascii_only = draw(st.booleans())
    if shape == "array":
        values = draw(st.lists(SFT_RECORDS, max_size=5))
        text, n = dump(values, ascii_only), len(values)
    elif shape == "object":
        text, n = dump(draw(with_fields({"messages": turns})), ascii_only), 1
    else:
        values = draw(st.lists(with_fields({"messages": turns, "prompt": any_text}), min_size=2, max_size=5))
        text, n = encode_lines(draw, values, ascii_only)
    utf16 = draw(st.booleans())
    data = text.encode("utf-16" if utf16 else "utf-8", "surrogatepass")
    return FileSpec(data, n, whole=True)  # whole: undecodable (lone surrogates) or not JSON


SFT_KINDS = {
    ".jsonl": jsonl_file(SFT_RECORDS) | JUNK,
    ".jsonl.gz": jsonl_file(SFT_RECORDS, gz=True),
    ".json": sft_json_file() | JUNK,
    ".parquet": parquet_file(
        ["messages", "prompt", "completion", "instruction", "output", "chosen", "rejected", "id", "score"]
    )
    | JUNK,
    ".txt": UNSUPPORTED,
}


@FUZZ
@given(files=source_folder(SFT_KINDS), max_chars=st.sampled_from([200_000, 10]))
def test_sft_reader_accounts_for_every_record(files, max_chars):
    out = ingest(SftReader, SftIngestParams(max_document_chars=max_chars, batch_rows=3), files)
    check_outcome(out, files, "prompt")


# -- the image–text inbox -----------------------------------------------------------------------
@functools.cache
def sample_images() -> dict[str, bytes]:
    """A few tiny real images, encoded once."""
    out = {}
    for fmt, mode, size in [("PNG", "RGB", (4, 3)), ("JPEG", "RGB", (8, 8)), ("GIF", "P", (3, 3))]:
        buffer = io.BytesIO()
        Image.new(mode, size, 7).save(buffer, fmt)
        out[fmt] = buffer.getvalue()
    return out


@st.composite
def image_bytes(draw) -> bytes:
    """A valid image, a truncated or bit-flipped one, an empty file, or random bytes."""
    how = draw(st.sampled_from(["valid", "valid", "cut", "flip", "empty", "junk"]))
    data = sample_images()[draw(st.sampled_from(sorted(sample_images())))]
    if how == "cut":
        return data[: draw(st.integers(1, len(data) - 1))]
    if how == "flip":
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if how == "empty":
        return b""
    return random_bytes(draw) if how == "junk" else data


def delimited(records: list[dict], delimiter: str) -> tuple[bytes, int]:
    """A CSV/TSV table and its data rows (rows of empty cells only are blank lines)."""
    header = sorted({k for r in records for k in r})
    if not header:
        return b"", 0
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, header, delimiter=delimiter)
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue().encode(), sum(any(v != "" for v in r.values()) for r in records)


@st.composite
def media_table(draw, media: list[str], fields: dict[str, list[str]]) -> tuple[str, FileSpec]:
    """A table naming some of ``media`` (and missing, outside, absolute paths): (suffix, spec)."""
    path_value = st.sampled_from(
        [*media, "missing.png", "../outside.png", "/abs.png", "", "sub", "a\x00b", "x" * 300]
    )
    # A name that is not UTF-8 can only be spelled in JSON (as escapes), not in Parquet or CSV.
    utf8_path = st.sampled_from(
        [m for m in media if _valid(m)] + ["missing.png", "../outside.png", "a\x00b", "x" * 300]
    )
    suffix = draw(st.sampled_from([".jsonl", ".csv", ".tsv", ".parquet"]))
    field_values = {name: utf8_path for name in fields["path"]}
    field_values |= {
        name: valid_text | st.sampled_from(["a red circle", "a photo of a cat"]) for name in fields["text"]
    }
    if suffix == ".jsonl":
        json_fields = {name: path_value | json_values for name in fields["path"]}
        json_fields |= {name: any_text | json_values for name in fields["text"]}
        json_fields["id"] = json_values
        return suffix, draw(jsonl_file(with_fields(json_fields) | json_values))
    if suffix == ".parquet":
        names = [*fields["path"], *fields["text"], "id", "url", "other"]
        return suffix, draw(parquet_file(names, values=field_values))
    records = draw(
        st.lists(
            st.fixed_dictionaries({}, optional={**field_values, "id": valid_text, "x": valid_text}),
            max_size=5,
        )
    )
    data, rows = delimited(records, "\t" if suffix == ".tsv" else ",")
    return suffix, FileSpec(data, rows, whole=True)  # whole: a CSV error stops the file


@st.composite
def shard(draw, images: list[str]) -> FileSpec:
    """A WebDataset tar: members grouped by key, odd names, directories and links; sometimes
    compressed, sometimes cut short."""
    member_name = st.builds(
        lambda folder, stem, ext: folder + stem + ext,
        st.sampled_from(["", "", "d/", "./", "../", "/", "a.b/"]),
        st.sampled_from(["k1", "k2", "k2", "", "é", "x.y", "K1"]) | st.text(min_size=0, max_size=6),
        st.sampled_from([".png", ".jpg", ".txt", ".json", ".cls", ".PNG", ".caption", "", ".tar.gz"]),
    )
    members = draw(
        st.lists(st.tuples(member_name, st.sampled_from(["file", "file", "file", "dir", "link"])), max_size=8)
    )
    buffer = io.BytesIO()
    groups, last = 0, None
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            if kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, "../../etc/passwd"
                tar.addfile(info)
                continue
            ext = name.rpartition("/")[2].partition(".")[2].lower()
            if ext in ("png", "jpg"):
                data = draw(image_bytes())
            elif ext == "json":
                data = dump(
                    draw(with_fields({"caption": any_text, "url": json_values}) | json_values), True
                ).encode()
            else:
                data = draw(valid_text.map(str.encode) | st.binary(max_size=16))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            folder, _, base = name.rpartition("/")
            key = f"{folder}/{base.partition('.')[0]}" if folder else base.partition(".")[0]
            groups += key != last
            last = key
    data = buffer.getvalue()
    pack = draw(st.sampled_from(["none", "none", "gz", "bz2", "xz"]))
    data = {"none": bytes, "gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[pack](data)
    if draw(st.integers(0, 4)) == 0:  # cut short: what was read stays, the rest is one row
        return FileSpec(data[: draw(st.integers(0, len(data)))])
    return FileSpec(data, groups)  # one row per sample: consecutive members sharing a key


@st.composite
def image_text_folder(draw) -> dict[str, FileSpec]:
    files: dict[str, FileSpec] = {}
    for _ in range(draw(st.integers(0, 4))):
        name = draw(file_names([".png", ".jpg", ".gif", ".webp", ".tiff", ".bmp"]))
        files.setdefault(name, FileSpec(draw(image_bytes())))
    fields = {"path": ["image", "image_path", "file_name"], "text": ["caption", "text"]}
    for _ in range(draw(st.integers(0, 3))):
        suffix, spec = draw(media_table(sorted(files), fields))
        files.setdefault(draw(file_names([suffix])), spec)
    for _ in range(draw(st.integers(0, 2))):
        files.setdefault(draw(file_names([".tar"])), draw(shard(sorted(files))))
    if draw(st.booleans()):
        files.setdefault(draw(file_names([".txt", ".zip", ".mp4"])), draw(UNSUPPORTED))
    return files


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@FUZZ
@given(files=image_text_folder(), max_caption=st.sampled_from([10_000, 8]))
def test_image_text_reader_accounts_for_every_pair(files, max_caption):
    params = ImageTextIngestParams(max_caption_chars=max_caption, batch_rows=3)
    out = ingest(ImageTextReader, params, files)
    check_outcome(out, files, "caption")
    check_media_named(out, files, IMAGE_SUFFIXES, "image_file")


# -- the video inbox ----------------------------------------------------------------------------
@functools.cache
def sample_video() -> bytes:
    """One real, tiny video (written once per session)."""
    from refinery.multimodal.video_synth import Stretch, write_stretches

    with tempfile.TemporaryDirectory() as tmp:
        path = write_stretches(
            Path(tmp) / "v.mp4", [Stretch(1.0, "red", "circle")], fps=4, width=32, height=32
        )
        return path.read_bytes()


@st.composite
def video_bytes(draw) -> bytes:
    how = draw(st.sampled_from(["valid", "valid", "cut", "empty", "junk"]))
    data = sample_video()
    if how == "cut":
        return data[: draw(st.integers(1, len(data) - 1))]
    return {"valid": data, "empty": b""}.get(how) or random_bytes(draw)


@st.composite
def video_folder(draw) -> dict[str, FileSpec]:
    files: dict[str, FileSpec] = {}
    for _ in range(draw(st.integers(0, 3))):
        files.setdefault(draw(file_names([".mp4", ".avi", ".mkv", ".webm"])), FileSpec(draw(video_bytes())))
    fields = {"path": ["video", "video_path", "file_name"], "text": ["question", "query", "text"]}
    for _ in range(draw(st.integers(0, 3))):
        suffix, spec = draw(media_table(sorted(files), fields))
        files.setdefault(draw(file_names([suffix])), spec)
    if draw(st.booleans()):
        files.setdefault(draw(file_names([".png", ".txt", ""])), draw(UNSUPPORTED))
    return files


@FUZZ
@given(files=video_folder(), max_question=st.sampled_from([2_000, 8]))
def test_video_reader_accounts_for_every_question(files, max_question):
    params = VideoIngestParams(max_question_chars=max_question, batch_rows=3)
    out = ingest(VideoReaderSource, params, files)
    check_outcome(out, files, "question")
    check_media_named(out, files, (".mp4", ".avi", ".mkv", ".webm"), "video_file")


# -- regressions: what the fuzzing found, each replayed on its smallest failing input ------------
def _reasons(out: Outcome) -> list[str]:
    return [r["reason"] for r in out.rejected]


def _png() -> bytes:
    return sample_images()["PNG"]


HUGE = b'{"text": ' + b"9" * 4301 + b"}"  # past Python's int/str conversion limit


def test_integer_past_the_digit_limit_is_malformed_json_not_a_crash():
    """json.loads raises ValueError (not JSONDecodeError) for a 4301-digit integer."""
    out = ingest(SourceReader, IngestParams(), {"a.jsonl": HUGE + b'\n{"text": "ok"}\n'})
    assert _reasons(out) == ["malformed_json"] and [r["text"] for r in out.kept] == ["ok"]
    assert "4300" in out.rejected[0]["reason_detail"]
    out = ingest(SftReader, SftIngestParams(), {"a.json": b"[" + b"9" * 4301 + b"]"})
    assert _reasons(out) == ["malformed_json"] and out.rejected[0]["line"] is None
    table = b'{"image": "a.png", "caption": ' + b"9" * 4301 + b"}\n"
    out = ingest(ImageTextReader, ImageTextIngestParams(), {"t.jsonl": table, "a.png": _png()})
    assert sorted(_reasons(out)) == ["malformed_json", "missing_caption"]  # the image: named by no row
    shard = io.BytesIO()
    with tarfile.open(fileobj=shard, mode="w") as tar:
        for name, data in (("k.png", _png()), ("k.json", b'{"caption": ' + b"9" * 4301 + b"}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = ingest(ImageTextReader, ImageTextIngestParams(), {"s.tar": shard.getvalue()})
    assert _reasons(out) == ["malformed_json"]
    out = ingest(
        VideoReaderSource,
        VideoIngestParams(),
        {"q.jsonl": b'{"video": "v.mp4", "id": ' + b"9" * 4301 + b"}\n"},
    )
    assert _reasons(out) == ["malformed_json"]


def test_lone_surrogate_escape_is_quarantined_not_a_writer_crash():
    """``"\\ud800"`` is valid JSON that Python returns as a str UTF-8 cannot encode: the Parquet
    writer failed the whole partition."""
    line = b'{"text": "a\\ud800b", "meta": {"k": ["\\udfff"]}}\n{"text": "pair \\ud83d\\ude00 ok"}\n'
    upper = b'{"text": "upper \\uDC80 escape"}\n'  # JSON escapes take either case
    out = ingest(SourceReader, IngestParams(), {"a.jsonl": line + upper})
    assert _reasons(out) == ["invalid_unicode"] * 2 and out.rejected[0]["raw"] == line.split(b"\n")[0]
    assert out.rejected[0]["reason_detail"] == "lone surrogate in record.text"
    assert out.rejected[1]["raw"] == upper.rstrip(b"\n")
    assert [r["text"] for r in out.kept] == ["pair \U0001f600 ok"]  # a valid pair is one character
    sft = b'[{"prompt": "hi", "completion": "\\udc80"}, {"prompt": "hi", "completion": "yo"}]'
    out = ingest(SftReader, SftIngestParams(), {"a.json": sft})
    assert _reasons(out) == ["invalid_unicode"] and len(out.kept) == 1
    out = ingest(SftReader, SftIngestParams(), {"a.jsonl": b'{"prompt": "x", "completion": "\\ud800"}\n'})
    assert _reasons(out) == ["invalid_unicode"]
    table = b'{"image": "a.png", "caption": "\\ud800"}\n'
    out = ingest(ImageTextReader, ImageTextIngestParams(), {"t.jsonl": table, "a.png": _png()})
    assert sorted(_reasons(out)) == ["invalid_unicode", "missing_caption"]
    out = ingest(
        VideoReaderSource, VideoIngestParams(), {"q.jsonl": b'{"video": "v.mp4", "question": "\\udc00"}\n'}
    )
    assert _reasons(out) == ["invalid_unicode"]


def test_file_names_that_are_not_utf8_are_read_and_shown_escaped():
    """A name the file system returns with surrogates (PEP 383) broke the writer (``file``
    column), and pyarrow could not open such a Parquet file by name."""
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": ["from parquet"]}), buffer)
    files = {
        os.fsdecode(b"\x80.parquet"): buffer.getvalue(),
        os.fsdecode(b"d\xe9j\xe0.jsonl"): b'{"text": "t"}\n',
    }
    out = ingest(SourceReader, IngestParams(), files)
    assert out.rejected == [] and sorted(r["text"] for r in out.kept) == ["from parquet", "t"]
    assert set(out.files) == {"\\x80.parquet", "d\\xe9j\\xe0.jsonl"}
    out = ingest(ImageTextReader, ImageTextIngestParams(), {os.fsdecode(b"\xff.png"): _png()})
    assert [(r["reason"], r["image_file"]) for r in out.rejected] == [("missing_caption", "\\xff.png")]


def test_utf16_jsonl_keeps_line_separators_inside_strings():
    """splitlines() also splits at U+2028, U+0085, \\x1c…, which JSON leaves unescaped inside
    strings: a valid record became two malformed lines."""
    data = json.dumps({"text": "one\u2028two\x85three"}, ensure_ascii=False).encode("utf-16")
    out = ingest(SourceReader, IngestParams(), {"a.jsonl": data})
    assert out.rejected == [] and [r["text"] for r in out.kept] == ["one\u2028two\x85three"]


def test_sft_json_lines_file_in_utf16_is_decoded():
    """A .json file of JSON lines fell back to reading raw bytes, so UTF-16 lines were garbage."""
    lines = "\n".join(json.dumps({"prompt": p, "completion": "yes"}) for p in ("a?", "b?"))
    out = ingest(SftReader, SftIngestParams(), {"a.json": lines.encode("utf-16")})
    assert out.rejected == [] and sorted(r["prompt"] for r in out.kept) == ["a?", "b?"]


def test_media_tables_in_utf16_are_decoded():
    """Captions and questions tables read UTF-16 as bytes split at b"\\n" (misaligned lines)."""
    table = '{"image": "a.png", "caption": "a grey square"}\n'.encode("utf-16")
    out = ingest(ImageTextReader, ImageTextIngestParams(), {"t.jsonl": table, "a.png": _png()})
    assert out.rejected == [] and [r["caption"] for r in out.kept] == ["a grey square"]
    out = ingest(VideoReaderSource, VideoIngestParams(), {"q.jsonl": b"\xff\xfe\n\x00"})
    assert out.rejected == [] and out.kept == []  # one blank line: nothing to account for


@pytest.mark.parametrize("value", ["a\x00b.png", "x" * 300 + ".png"])
def test_media_paths_with_a_nul_byte_or_an_overlong_name_are_quarantined(value):
    """Path.resolve() raises ValueError for a NUL byte; is_file() raises OSError for a name longer
    than the file system allows: either escaped the reader."""
    table = json.dumps({"image": value, "caption": "c"}).encode() + b"\n"
    out = ingest(ImageTextReader, ImageTextIngestParams(), {"t.jsonl": table})
    assert (
        _reasons(out) == ["image_outside_source"] and "not a usable path" in out.rejected[0]["reason_detail"]
    )
    table = json.dumps({"video": value.replace(".png", ".mp4"), "question": "q?"}).encode() + b"\n"
    out = ingest(VideoReaderSource, VideoIngestParams(), {"q.jsonl": table})
    assert _reasons(out) == ["video_outside_source"]


def test_sft_score_beyond_float_range_is_no_score_not_a_crash():
    """math.isfinite(10**400) raises OverflowError: a quality or ranking score that big escaped."""
    lines = [
        {"prompt": "hi", "completion": "yo", "score": 10**400},
        {"prompt": "p", "responses": ["a", "b"], "scores": [10**400, 1]},
    ]
    out = ingest(
        SftReader, SftIngestParams(), {"a.jsonl": b"".join(json.dumps(r).encode() + b"\n" for r in lines)}
    )
    assert [r["quality"] for r in out.kept] == [None] and json.loads(out.kept[0]["meta"])["score"] == 10**400
    assert _reasons(out) == ["malformed_ranking"]


def test_shard_whose_gzip_header_is_cut_short_is_a_corrupt_archive():
    """tarfile's stream reader raises TypeError (ord() of an empty read) on b"\\x1f\\x8b\\x08"."""
    out = ingest(ImageTextReader, ImageTextIngestParams(), {"s.tar": b"\x1f\x8b\x08"})
    assert _reasons(out) == ["corrupt_archive"]


def test_sft_record_with_an_empty_prompt_is_quarantined_at_ingest():
    """It was admitted (emptiness was left to sft_checked's rules), so raw_sft's blocking
    non_empty_text check failed and stopped the source's whole SFT chain."""
    records = [
        {"instruction": "", "response": ""},
        {"instruction": "  ", "output": "x"},
        {"prompt": "p", "completion": ""},
    ]
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    out = ingest(SftReader, SftIngestParams(), {"a.jsonl": lines})
    assert _reasons(out) == ["empty_prompt", "empty_prompt"] and [r["prompt"] for r in out.kept] == ["p"]
