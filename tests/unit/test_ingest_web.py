"""HTML pages, WARC crawls and PDFs in the text inbox: real Debian documentation files, every
failure a quarantine row with its reason, and decompression bombs stopped at the limit."""

from __future__ import annotations

import io
import json
import re
import shutil
import tracemalloc
import zlib
from pathlib import Path

import pytest

from refinery.ingest.html import decode_html, extract_html, is_navigation_line, minimal_html_to_markdown
from refinery.ingest.pdf import PAGE_SEPARATOR, reflow_page
from refinery.ingest.text_reader import IngestParams, SourceReader

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HTML_DIR = FIXTURES / "html"
PDF_FILE = FIXTURES / "pdf" / "shared-mime-info-spec.pdf"
EXPECTATIONS = json.loads((FIXTURES / "html_expectations.json").read_text())["pages"]


def read_all(folder: Path, **params):
    reader = SourceReader(folder, "s", IngestParams(**params))
    docs, quarantine = [], []
    for batch in reader.batches():
        docs += batch.documents
        quarantine += batch.quarantine
    return docs, quarantine, reader.stats


def norm(text: str) -> str:
    """Markup-insensitive form for snippet matching (as html_expectations.json says)."""
    return " ".join(re.sub(r"[`*\\¶]", "", text).split())


def page_html(rel: str) -> str:
    return decode_html((HTML_DIR / rel).read_bytes()).text


# -- HTML extraction quality on the hand-checked pages -------------------------------------------
def test_expectation_snippets_are_on_the_pages():
    """The hand-written snippets really occur in each page's full visible text (no typos)."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    assert len(EXPECTATIONS) == 14
    for page in EXPECTATIONS:
        full = norm(extract_plain_text(HTMLTree.parse(page_html(page["file"])), main_content=False))
        for snippet in page["must_contain"] + page["must_not_contain"]:
            assert norm(snippet) in full, (page["file"], snippet)


def score(extractor: str) -> tuple[float, float, list]:
    kept = leaked = n_keep = n_leak = 0
    misses = []
    for page in EXPECTATIONS:
        text = norm(extract_html(page_html(page["file"]), extractor).text)
        for snippet in page["must_contain"]:
            n_keep += 1
            kept += norm(snippet) in text
            if norm(snippet) not in text:
                misses.append((page["file"], snippet))
        for snippet in page["must_not_contain"]:
            n_leak += 1
            leaked += norm(snippet) in text
    return kept / n_keep, leaked / n_leak, misses


def test_resiliparse_keeps_all_main_text_and_little_boilerplate():
    kept, leaked, misses = score("resiliparse")
    assert kept == 1.0, misses
    assert leaked <= 0.2


def test_trafilatura_is_available_as_the_stricter_extractor():
    kept, leaked, _ = score("trafilatura")
    assert kept >= 0.8
    assert leaked <= 0.1


def test_reference_lists_survive_and_navigation_does_not():
    """Parameter lists, "Raises" items and "Return type" lines of API reference pages are kept
    (resiliparse's heuristics dropped them: issue 22); the Sphinx sidebar, its table of contents
    and the related bars stay out."""
    sqlite3 = extract_html(page_html("python3.11-doc/library/sqlite3-reference.html"))
    assert sqlite3.meta["main_container"] == "div[role=main]"
    text = sqlite3.text
    assert "\n- database (path-like object) – The path to the database file to be opened." in text
    assert "\n- timeout (float) – How many seconds the connection should wait" in text
    assert "Return type:\n\nConnection" in text
    assert "\n- OperationalError – If the database connection is currently involved" in text
    assert "\n- OverflowError – If len(data) is larger than 2**63 - 1." in text
    assert "\n  - step(): Add a row to the aggregate." in text
    enum = extract_html(page_html("python3.11-doc/library/enum.html")).text
    assert "\n- int.__str__() for IntEnum and IntFlag\n- str.__str__() for StrEnum" in enum
    for page in (text, enum):
        for nav in (
            "Table of Contents",
            "Previous topic",
            "Show Source",
            "Created using Sphinx",
            "Please donate",
        ):
            assert nav not in page
    # the heuristics alone (the reader before) lost those items
    before = extract_html(
        page_html("python3.11-doc/library/sqlite3-reference.html"), main_container=False
    ).text
    assert "OverflowError – If len(data)" not in before and "database (path-like object)" in before


def test_main_container_drops_navigation_inside_and_falls_back_without_one():
    items = "".join(f"<li><code>p{i}</code> (<em>int</em>) – <a href='#'>see</a></li>" for i in range(8))
    page = (
        "<html><body><div class='sidebar'><ul><li><a href='/'>Home</a></li></ul></div>"
        "<main><nav><a href='/a'>Section A</a> <a href='/b'>Section B</a></nav>"
        f"<h1>frob(p0, ...)</h1><p>Frobnicate the parameters.</p><ul>{items}</ul>"
        "<aside>Sponsored: buy more frobs</aside><footer>Page footer</footer></main></body></html>"
    )
    result = extract_html(page)
    assert result.meta["main_container"] == "main"
    assert "- p7 (int) – see" in result.text
    assert "Section A" not in result.text and "Sponsored" not in result.text
    assert "Page footer" not in result.text and "Home" not in result.text
    # no main element, or two unrelated ones: the main-content heuristics decide, as before
    for markup in (
        page.replace("<main>", "<div>").replace("</main>", "</div>"),
        page.replace("<main>", "<div role='main'>").replace("</main>", "</div><main>x</main>"),
    ):
        fallback = extract_html(markup)
        assert "main_container" not in fallback.meta
        assert "Frobnicate the parameters." in fallback.text


def test_markdown_keeps_headings_lists_and_code():
    text = extract_html(page_html("libffi8/Simple-Example.html")).text
    assert "### 2.2 Simple Example" in text
    assert "```\n#include <stdio.h>\n#include <ffi.h>" in text
    assert "Next:" not in text  # the Texinfo pager row
    listing = extract_html(page_html("libxslt1-dev/intro.html")).text
    assert "\n- Libxslt is a C implementation\n- Libxslt is based on libxml" in listing


def test_minimal_html_conversion():
    md = minimal_html_to_markdown(
        "<h2>Title</h2>\n<p>One  paragraph\n wrapped.</p>\n<ol><li>first</li><li>second"
        "<ul><li>inner</li></ul></li></ol>\nloose line\n<pre>  x = 1\n  y = 2</pre>"
    )
    expected = "## Title\n\nOne paragraph wrapped.\n\n1. first\n2. second\n  - inner\n\nloose line\n\n"
    assert md == expected + "```\n  x = 1\n  y = 2\n```"


@pytest.mark.parametrize(
    ("line", "nav"),
    [
        ("Prev Home Next", True),
        ("<< The Valgrind Quick Start Guide Up Valgrind User Manual >>", False),
        ("Next: Types, Previous: The Basics, Up: Using libffi [Index]", True),
        ("Next: , Previous: , Up: libffi [Index]", True),
        ("The next step is to go up the stack.", False),
        ("Index", True),
    ],
)
def test_navigation_lines(line, nav):
    assert is_navigation_line(line) is nav


# -- HTML files through the reader -------------------------------------------------------------
def test_html_files_become_documents_with_title_and_charset(tmp_path):
    shutil.copytree(HTML_DIR, tmp_path / "s")
    docs, quarantine, stats = read_all(tmp_path / "s")
    assert quarantine == []
    assert len(docs) == 14 and stats.documents == 14
    by_file = {d["file"]: d for d in docs}
    tty = by_file["python3.11-doc/library/tty.html"]
    meta = json.loads(tty["meta"])
    assert meta["title"] == "tty — Terminal control functions — Python 3.11.2 documentation"
    assert meta["html_lang"] == "en" and meta["extractor"] == "resiliparse"
    assert tty["line"] == 1 and tty["text"].startswith("tty — Terminal control functions\n")
    xslt = json.loads(by_file["libxslt1-dev/intro.html"]["meta"])
    assert (xslt["charset"], xslt["charset_source"]) == ("cp1252", "meta")  # ISO-8859-1 as browsers read it


def test_heading_marks_are_optional(tmp_path):
    folder = tmp_path / "s"
    shutil.copytree(HTML_DIR / "libffi8", folder)
    plain, _, _ = read_all(folder)
    marked, _, _ = read_all(folder, html_heading_marks=True)
    by_file = {d["file"]: d["text"] for d in marked}
    assert "### 2.2 Simple Example\n" in by_file["Simple-Example.html"]
    assert "\n2.2 Simple Example\n" in "\n" + {d["file"]: d["text"] for d in plain}["Simple-Example.html"]
    assert all("#include <ffi.h>" in d["text"] for d in plain if d["file"] == "Simple-Example.html")


REAL_PARAGRAPH = "Français, Ärger, Øre: « l'été » — 3 €"


def html_bytes(body: str, encoding: str, meta_charset: str | None) -> bytes:
    meta = f'<meta charset="{meta_charset}">' if meta_charset else ""
    page = f"<html><head>{meta}<title>t</title></head><body><p>{body}</p></body></html>"
    return page.encode(encoding)


@pytest.mark.parametrize(
    ("data", "charset", "source"),
    [
        (html_bytes(REAL_PARAGRAPH, "cp1252", "windows-1252"), "cp1252", "meta"),
        (html_bytes(REAL_PARAGRAPH, "cp1252", "iso-8859-1"), "cp1252", "meta"),  # € is 0x80 in cp1252
        (html_bytes(REAL_PARAGRAPH, "utf-8", None), "utf-8", "utf-8"),
        (b"\xef\xbb\xbf" + html_bytes(REAL_PARAGRAPH, "utf-8", "iso-8859-1"), "utf-8", "bom"),  # BOM wins
        (html_bytes(REAL_PARAGRAPH, "utf-16", None), "utf-16-le", "bom"),
        (html_bytes(REAL_PARAGRAPH, "cp1252", "utf-8"), "cp1252", "detected"),  # wrong declaration
    ],
)
def test_charset_detection(data, charset, source):
    decoded = decode_html(data)
    assert (decoded.charset, decoded.charset_source) == (charset, source)
    assert REAL_PARAGRAPH in decoded.text


def test_wrong_declared_charset_is_recorded(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "page.html").write_bytes(html_bytes(REAL_PARAGRAPH * 3, "cp1252", "utf-8"))
    docs, quarantine, _ = read_all(folder)
    assert quarantine == []
    meta = json.loads(docs[0]["meta"])
    assert meta["charset_declared"] == {"meta": "utf-8"} and meta["charset_source"] == "detected"
    assert REAL_PARAGRAPH in docs[0]["text"]


def test_bad_html_files_are_quarantined_with_reasons(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    binary = PDF_FILE.read_bytes()[4000:9000]  # compressed streams served as a page
    (folder / "binary.html").write_bytes(binary)
    (folder / "empty.html").write_bytes(b"<html><head><title>Nothing</title></head><body></body></html>")
    (folder / "script.htm").write_bytes(b"<html><body><script>var a = 1;</script></body></html>")
    (folder / "big.html").write_bytes((HTML_DIR / "base-passwd" / "users-and-groups.html").read_bytes())
    docs, quarantine, stats = read_all(folder, max_record_bytes=10_000)
    reasons = {q["file"]: q["reason"] for q in quarantine}
    assert reasons == {
        "binary.html": "undecodable_bytes",
        "empty.html": "html_no_main_content",
        "script.htm": "html_no_main_content",
        "big.html": "oversized",
    }
    assert docs == [] and stats.quarantined == 4
    assert all(q["raw"] for q in quarantine)  # the bytes are kept
    assert "tried" in next(q for q in quarantine if q["file"] == "binary.html")["reason_detail"]


# -- WARC ----------------------------------------------------------------------------------------
def _gzip(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def _gzip_bomb(inflated_mb: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"<p>" + b"a" * (1 << 20)
    return b"".join(c.compress(chunk) for _ in range(inflated_mb)) + c.flush()


def write_warc(path: Path, gzip: bool, cut_last_after: int | None = None) -> dict:
    """A WARC of the real fixture pages plus every kind of record a crawl holds; returns what
    each record ordinal is. ``cut_last_after`` cuts the file that many bytes into its last
    record, as an interrupted download leaves it."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    plan: dict[int, str] = {}
    records = []
    with path.open("wb") as out:
        writer = WARCWriter(out, gzip=gzip)

        def add(kind: str, uri: str, payload: bytes, headers=None, status="200 OK", what=""):
            http = StatusAndHeaders(status, headers, protocol="HTTP/1.1") if headers is not None else None
            records.append(
                writer.create_warc_record(uri, kind, payload=io.BytesIO(payload), http_headers=http)
            )
            plan[len(plan) + 1] = what

        add("warcinfo", None, b"software: refinery-test\r\n", what="skip:warcinfo")
        for page in EXPECTATIONS:
            uri = f"https://docs.example/{page['file']}"
            add("request", uri, b"GET / HTTP/1.1\r\n\r\n", what="skip:request")
            charset = "iso-8859-1" if page["file"].startswith("libxslt") else "utf-8"
            add(
                "response",
                uri,
                (HTML_DIR / page["file"]).read_bytes(),
                [("Content-Type", f"text/html; charset={charset}")],
                what="doc:" + page["file"],
            )
        tty = (HTML_DIR / "python3.11-doc/library/tty.html").read_bytes()
        add("metadata", "https://docs.example/x", b"fetchTimeMs: 12\r\n", what="skip:metadata")
        add(
            "response",
            "https://docs.example/404",
            b"<html>gone</html>",
            [("Content-Type", "text/html")],
            status="404 Not Found",
            what="skip:http_status_404",
        )
        add(
            "response",
            "https://docs.example/logo.png",
            b"\x89PNG\r\n\x1a\n" + bytes(64),
            [("Content-Type", "image/png")],
            what="skip:non_html",
        )
        add(
            "response",
            "https://docs.example/gz",
            _gzip(tty),
            [("Content-Type", "text/html"), ("Content-Encoding", "gzip")],
            what="doc:gzip",
        )
        chunked = b"".join(
            b"%x\r\n%s\r\n" % (len(tty[i : i + 5000]), tty[i : i + 5000]) for i in range(0, len(tty), 5000)
        )
        add(
            "response",
            "https://docs.example/chunked",
            chunked + b"0\r\n\r\n",
            [("Content-Type", "text/html"), ("Transfer-Encoding", "chunked")],
            what="doc:chunked",
        )
        add(
            "response",
            "https://docs.example/bomb",
            _gzip_bomb(64),
            [("Content-Type", "text/html"), ("Content-Encoding", "gzip")],
            what="q:oversized",
        )
        add(
            "response",
            "https://docs.example/badgz",
            b"\x1f\x8b\x08\x00garbage",
            [("Content-Type", "text/html"), ("Content-Encoding", "gzip")],
            what="q:undecodable_bytes",
        )
        add(
            "response",
            "https://docs.example/nocontent",
            b"<html><body></body></html>",
            [("Content-Type", "text/html")],
            what="q:html_no_main_content",
        )
        what = "q:warc_truncated_record" if cut_last_after else "doc:last"
        add("response", "https://docs.example/last", tty, [("Content-Type", "text/html")], what=what)
        for record in records[:-1] if cut_last_after else records:
            writer.write_record(record)
        if cut_last_after:
            buffer = io.BytesIO()
            WARCWriter(buffer, gzip=False).write_record(records[-1])
            cut = buffer.getvalue()[:cut_last_after]
            if gzip:  # a gzip member that stops mid-record
                c = zlib.compressobj(6, zlib.DEFLATED, 31)
                cut = c.compress(cut) + c.flush(zlib.Z_SYNC_FLUSH)
            out.write(cut)
    return plan


@pytest.mark.parametrize("gzip", [False, True])
def test_warc_records_documents_skips_and_quarantine(tmp_path, gzip):
    folder = tmp_path / "s"
    folder.mkdir()
    path = folder / ("crawl.warc.gz" if gzip else "crawl.warc")
    plan = write_warc(path, gzip, cut_last_after=3000)
    docs, quarantine, stats = read_all(folder, max_record_bytes=1 << 20)

    expected_docs = {o for o, what in plan.items() if what.startswith("doc:")}
    assert {d["line"] for d in docs} == expected_docs
    assert {q["line"]: q["reason"] for q in quarantine} == {
        o: what[2:] for o, what in plan.items() if what.startswith("q:")
    }
    assert stats.skipped == {
        "warc:warcinfo": 1,
        "warc:request": 14,
        "warc:metadata": 1,
        "warc:http_status_404": 1,
        "warc:non_html:image/png": 1,
    }
    # every record is a document, a quarantine row or a counted skip
    assert len(docs) + len(quarantine) + sum(stats.skipped.values()) == len(plan)

    first = next(d for d in docs if d["url"].endswith("library/tty.html"))
    meta = json.loads(first["meta"])
    assert meta["http_status"] == 200 and meta["content_type"].startswith("text/html")
    assert meta["warc_record_id"].startswith("<urn:uuid:") and meta["warc_date"]
    assert first["text"].startswith("tty — Terminal control functions\n")
    xslt = next(d for d in docs if d["url"].endswith("libxslt1-dev/intro.html"))
    assert json.loads(xslt["meta"])["charset_source"] == "http"
    gz = next(d for d in docs if d["url"].endswith("/gz"))
    chunked = next(d for d in docs if d["url"].endswith("/chunked"))
    assert gz["text"] == chunked["text"] == first["text"]  # encodings undone before extraction
    assert {gz["id"], chunked["id"]} == {first["id"] + "-2", first["id"] + "-3"}
    truncated = next(q for q in quarantine if q["reason"] == "warc_truncated_record")
    assert 0 < len(truncated["raw"]) < len((HTML_DIR / "python3.11-doc/library/tty.html").read_bytes())


def test_warc_gzip_bomb_is_stopped_with_bounded_memory(tmp_path):
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    folder = tmp_path / "s"
    folder.mkdir()
    bomb = _gzip_bomb(200)  # ~200 KB that inflate to 200 MB
    with (folder / "bomb.warc.gz").open("wb") as out:
        writer = WARCWriter(out, gzip=True)
        http = StatusAndHeaders(
            "200 OK", [("Content-Type", "text/html"), ("Content-Encoding", "gzip")], "HTTP/1.1"
        )
        writer.write_record(
            writer.create_warc_record("https://x/b", "response", payload=io.BytesIO(bomb), http_headers=http)
        )
    tracemalloc.start()
    docs, quarantine, _ = read_all(folder, max_record_bytes=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert docs == [] and [q["reason"] for q in quarantine] == ["oversized"]
    assert peak < 16 * (1 << 20), f"peak {peak / 2**20:.1f} MiB while reading a 200 MiB bomb"


def test_corrupt_warc_keeps_what_was_read(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    path = folder / "crawl.warc"
    write_warc(path, gzip=False)
    data = path.read_bytes()
    third = data.find(b"WARC/1.", data.find(b"WARC-Type: response") + 1)
    third = data.find(b"WARC/1.", third + 1)
    path.write_bytes(data[:third] + b"this is not a warc header\r\n\r\n" + data[third:])
    docs, quarantine, _ = read_all(folder)
    assert len(docs) >= 1
    assert quarantine[-1]["reason"] == "corrupt_archive"


# -- PDF -----------------------------------------------------------------------------------------
def test_pdf_becomes_one_document_with_pages(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    shutil.copy(PDF_FILE, folder)
    docs, quarantine, _ = read_all(folder)
    assert quarantine == [] and len(docs) == 1
    doc = docs[0]
    meta = json.loads(doc["meta"])
    assert meta["pdf_pages"] == 17 and doc["text"].count(PAGE_SEPARATOR) == 16
    offsets = meta["pdf_page_offsets"]
    assert offsets[0] == 0 and all(
        doc["text"][o - len(PAGE_SEPARATOR) : o] == PAGE_SEPARATOR for o in offsets[1:]
    )
    # a paragraph wrapped over three lines in the PDF is one line again, in reading order
    assert (
        "Many programs and desktops use the MIME system[MIME] to represent the types of files. "
        "Frequently, it is necessary to work out the correct MIME type for a file." in doc["text"]
    )
    assert doc["text"].index("1.1. Version") < doc["text"].index("2. Unified system")
    # the running header is kept once (page 1), not on every page
    assert doc["text"].count("Shared MIME-info Database\n") <= 2
    assert meta["pdf_running_lines_removed"] >= 16


def _pdf_variants(tmp_path: Path) -> Path:
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import NameObject, StreamObject

    folder = tmp_path / "s"
    folder.mkdir()
    real = PDF_FILE.read_bytes()
    for name, user in (("locked.pdf", "secret"), ("owner_only.pdf", "")):
        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(real)))
        writer.encrypt(user_password=user, owner_password="owner", algorithm="AES-128")
        with (folder / name).open("wb") as out:
            writer.write(out)
    (folder / "truncated.pdf").write_bytes(real[: len(real) // 3])
    (folder / "not_a_pdf.pdf").write_bytes((HTML_DIR / "libffi8" / "Introduction.html").read_bytes())
    blank = PdfWriter()
    blank.add_blank_page(612, 792)
    with (folder / "scanned.pdf").open("wb") as out:
        blank.write(out)
    bomb = PdfWriter()
    page = bomb.add_blank_page(612, 792)
    c = zlib.compressobj(9)
    chunk = b"BT /F1 12 Tf (a) Tj ET\n" * 40_000
    stream = StreamObject()
    stream._data = b"".join(c.compress(chunk) for _ in range(200)) + c.flush()  # 184 MB inflated
    stream[NameObject("/Filter")] = NameObject("/FlateDecode")
    page[NameObject("/Contents")] = bomb._add_object(stream)
    with (folder / "bomb.pdf").open("wb") as out:
        bomb.write(out)
    return folder


def test_bad_pdfs_are_quarantined_with_reasons(tmp_path):
    folder = _pdf_variants(tmp_path)
    tracemalloc.start()
    docs, quarantine, _ = read_all(folder, max_pdf_stream_bytes=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    reasons = {q["file"]: q["reason"] for q in quarantine}
    assert reasons == {
        "locked.pdf": "pdf_encrypted",
        "truncated.pdf": "pdf_corrupt",
        "not_a_pdf.pdf": "pdf_corrupt",
        "scanned.pdf": "pdf_no_text",
        "bomb.pdf": "oversized",
    }
    assert all(q["raw"] for q in quarantine) and all(q["line"] == 1 for q in quarantine)
    # a PDF with only an owner password opens with the empty user password
    assert [d["file"] for d in docs] == ["owner_only.pdf"]
    assert json.loads(docs[0]["meta"])["pdf_encrypted"] is True
    assert peak < 32 * (1 << 20), f"peak {peak / 2**20:.1f} MiB"


def test_reflow_keeps_lists_and_code():
    page = (
        "    This is a paragraph that was wrapped by the PDF\n"
        "    writer at a fixed width, with a hyphen-\n"
        "    ated word.\n\n"
        "    • first item that is long enough to be wrapped\n"
        "      onto a second line\n"
        "    • second item\n\n"
        "    int main() {\n"
        "      return 0;\n"
        "    }\n"
    )
    assert reflow_page(page) == (
        "This is a paragraph that was wrapped by the PDF writer at a fixed width, with a hyphenated word.\n\n"
        "• first item that is long enough to be wrapped onto a second line\n• second item\n\n"
        "int main() {\n  return 0;\n}"
    )


def test_unsupported_files_still_quarantined(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "page.html.gz").write_bytes(_gzip(b"<html><body><p>x</p></body></html>"))
    _, quarantine, _ = read_all(folder)
    assert [q["reason"] for q in quarantine] == ["unsupported_file_type"]
