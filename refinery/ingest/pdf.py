"""PDF files to one document each: text in reading order, page boundaries kept, bombs bounded.

pypdf (BSD) rather than pdfminer.six (MIT) or PyMuPDF (AGPL, not allowed): pdfminer.six inflates
every stream with an unbounded ``zlib.decompress``, so a small PDF whose content stream inflates
to gigabytes is read fully into memory; pypdf caps every decoder (``pypdf.apply_configuration``),
and is 2–3× faster on the same files. Its layout mode keeps paragraph breaks (blank lines), which
:func:`reflow_page` uses to rejoin the lines a paragraph was wrapped into — C4's line rules would
otherwise drop every wrapped line that does not end in punctuation.

The document's text is the pages joined by ``PAGE_SEPARATOR`` (a form feed on its own line, as
``pdftotext`` marks pages); ``meta["pdf_page_offsets"]`` gives each page's first character.
Lines repeated at the top or bottom of most pages (running headers, footers, page numbers) are
removed and counted. Failures raise :class:`PdfProblem` with a quarantine reason.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import dataclass, field

PDF_SUFFIXES = (".pdf",)
PAGE_SEPARATOR = "\n\f\n"
_BULLET = re.compile(r"^(?:[•◦▪‣∙·*\-–]|\(?\d{1,3}[.)]|\(?[a-z][.)])\s+")
_PAGE_NUMBER = re.compile(r"^(?:page\s*)?[\divxlc]+(?:\s*(?:/|of)\s*\d+)?$", re.IGNORECASE)
_CODE_LINE = re.compile(r"[{};]\s*$|^\s*[}{]")
_SPACES = re.compile(r"[ \t]{2,}")


class PdfProblem(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class PdfExtraction:
    text: str
    meta: dict = field(default_factory=dict)


def extract_pdf(data: bytes, max_pages: int, max_stream_bytes: int) -> PdfExtraction:
    """Text and metadata of a PDF; raises :class:`PdfProblem` (pdf_encrypted, pdf_corrupt,
    pdf_no_text, oversized)."""
    from pypdf import PdfReader, apply_configuration
    from pypdf.errors import DependencyError, LimitReachedError

    limits = {
        "zlib_maximum_output_length": max_stream_bytes,
        "lzw_maximum_output_length": max_stream_bytes,
        "run_length_maximum_output_length": max_stream_bytes,
        "brotli_maximum_output_length": max_stream_bytes,
        "array_based_stream_maximum_output_length": max_stream_bytes,
        "maximum_declared_stream_length": max_stream_bytes,
        "image_maximum_buffer_size": max_stream_bytes,
    }
    with apply_configuration(**limits):
        try:
            reader = PdfReader(io.BytesIO(data), strict=False)
            encrypted = reader.is_encrypted
            if encrypted:
                _decrypt(reader, DependencyError)
            n_pages = len(reader.pages)
        except PdfProblem:
            raise
        except LimitReachedError as err:
            raise PdfProblem("oversized", f"a stream inflates past {max_stream_bytes} bytes: {err}") from err
        except Exception as err:  # pypdf raises many types for broken files
            raise PdfProblem("pdf_corrupt", f"{type(err).__name__}: {err}") from err
        if n_pages == 0:
            raise PdfProblem("pdf_corrupt", "the PDF has no pages")
        if n_pages > max_pages:
            raise PdfProblem("oversized", f"{n_pages} pages > max_pdf_pages {max_pages}")
        pages, failed = [], []
        for number, page in enumerate(reader.pages, start=1):
            try:
                pages.append(_page_text(page))
            except LimitReachedError as err:
                raise PdfProblem(
                    "oversized", f"page {number}: a stream inflates past {max_stream_bytes} bytes ({err})"
                ) from err
            except Exception as err:
                failed.append({"page": number, "error": f"{type(err).__name__}: {err}"[:200]})
                pages.append("")
        metadata = _metadata(reader)
    if len(failed) == n_pages:
        raise PdfProblem("pdf_corrupt", f"no page could be read; first error: {failed[0]['error']}")
    pages, removed = strip_running_lines(pages)
    pages = [reflow_page(p) for p in pages]
    if not any(p.strip() for p in pages):
        raise PdfProblem("pdf_no_text", f"{n_pages} pages without extractable text (scanned? needs OCR)")
    offsets, position = [], 0
    for text in pages:
        offsets.append(position)
        position += len(text) + len(PAGE_SEPARATOR)
    meta = {
        "pdf_pages": n_pages,
        "pdf_page_offsets": offsets,
        "pdf_encrypted": encrypted,
        "pdf_running_lines_removed": removed,
        **metadata,
    }
    if failed:
        meta["pdf_pages_failed"] = failed
    return PdfExtraction(PAGE_SEPARATOR.join(pages), meta)


def _decrypt(reader, dependency_error: type[Exception]) -> None:
    """Open PDFs that are only owner-password protected (the empty user password); others fail."""
    try:
        opened = reader.decrypt("")
    except dependency_error as err:
        raise PdfProblem("pdf_encrypted", f"encrypted, and decrypting needs: {err}") from err
    except Exception as err:
        detail = f"encrypted; decryption failed: {type(err).__name__}: {err}"
        raise PdfProblem("pdf_encrypted", detail) from err
    if not opened:
        raise PdfProblem("pdf_encrypted", "encrypted with a user password (no text without it)")


def _page_text(page) -> str:
    try:
        return page.extract_text(extraction_mode="layout")
    except (ValueError, KeyError, IndexError, TypeError, ZeroDivisionError):
        return page.extract_text()  # layout mode fails on some font metrics; plain mode still reads


def _metadata(reader) -> dict:
    out: dict = {}
    try:
        info = reader.metadata or {}
    except Exception:
        return out
    for key, name in (("/Title", "title"), ("/Author", "author"), ("/Subject", "subject")):
        if (value := info.get(key)) and str(value).strip():
            out[f"pdf_{name}"] = str(value).strip()
    for key, name in (("/CreationDate", "created"), ("/Producer", "producer")):
        if value := info.get(key):
            out[f"pdf_{name}"] = str(value)
    return out


def _edge_key(line: str) -> str:
    return re.sub(r"\d+", "#", " ".join(line.split())).lower()


def strip_running_lines(pages: list[str]) -> tuple[list[str], int]:
    """Drop page-number lines and lines repeated at the top/bottom of ≥ half the pages (≥ 3).

    Only the first and last two non-blank lines of a page are candidates, so body text that
    happens to repeat is never touched.
    """
    edges: list[list[int]] = []
    counts: Counter = Counter()
    split = [p.split("\n") for p in pages]
    for lines in split:
        nonblank = [i for i, line in enumerate(lines) if line.strip()]
        candidates = sorted(set(nonblank[:2] + nonblank[-2:]))
        edges.append(candidates)
        counts.update({_edge_key(lines[i]) for i in candidates})
    threshold = max(3, (len(pages) + 1) // 2)
    removed = 0
    out = []
    for page_index, (lines, candidates) in enumerate(zip(split, edges, strict=True)):
        drop = set()
        for i in candidates:
            if _PAGE_NUMBER.match(lines[i].strip()):
                drop.add(i)
            elif counts[_edge_key(lines[i])] >= threshold and page_index > 0:
                drop.add(i)  # the first page keeps its copy: there it is usually the title
        removed += len(drop)
        out.append("\n".join(line for i, line in enumerate(lines) if i not in drop))
    return out, removed


def reflow_page(text: str) -> str:
    """Rejoin wrapped lines into paragraphs; keep list items, headings and code as lines.

    Blocks are separated by blank lines (layout mode emits them between paragraphs). A block of
    prose lines becomes one line, hyphenated line ends rejoined; a bullet or number starts a new
    line, and so does the line after a short one (a paragraph's last line, or a heading); blocks
    that look like code (lines ending in braces or semicolons) keep their lines.
    """
    blocks, current = [], []
    for line in text.split("\n"):
        if line.strip():
            current.append(line.rstrip())
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return "\n\n".join(_reflow_block(b) for b in blocks)


def _reflow_block(lines: list[str]) -> str:
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    lines = [line[indent:] for line in lines]
    if len(lines) > 1 and sum(bool(_CODE_LINE.search(line)) for line in lines) * 3 >= len(lines):
        return "\n".join(lines)
    width = max(len(line) for line in lines)
    out: list[str] = []
    previous = ""
    for raw in lines:
        line = _SPACES.sub(" ", raw.strip())
        ended = len(previous) < 0.6 * width  # a short line ends its paragraph (or is a heading)
        previous = raw
        if not out or ended or _BULLET.match(line):
            out.append(line)
        elif out[-1].endswith("-") and len(out[-1]) > 1 and out[-1][-2].isalpha() and line[:1].islower():
            out[-1] = out[-1][:-1] + line
        else:
            out[-1] += " " + line
    return "\n".join(out)
