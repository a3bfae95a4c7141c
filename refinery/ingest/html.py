"""HTML pages to documents: charset detection, main-content extraction, markdown-ish text.

Two maintained extractors are supported, chosen by ``IngestParams.html_extractor``:

- ``resiliparse`` (default; what DCLM uses): a C++ DOM and main-content heuristics. Its minimal-HTML
  output (headings, paragraphs, lists, ``<pre>``) is turned into markdown-ish text here: headings on
  their own line (``# Title`` with ``heading_marks``), list items ``- item`` lines, code blocks
  fenced. On the hand-checked pages in ``tests/fixtures/html_expectations.json`` it keeps all the
  main text (trafilatura 88 %: it drops headings) but leaks more navigation (16 % vs 5 % of the
  boilerplate snippets), and it is 24× faster (``benchmarks/bench_parsing.py``, docs/parsing.md).
- ``trafilatura`` (datatrove's choice): stricter boilerplate removal, markdown output, richer
  metadata (date, site name), but it drops some headings and keeps source line breaks inside
  paragraphs, which C4's line rules then cut.

Decoding follows the order a browser uses: byte-order mark, then the HTTP ``Content-Type`` charset
(WARC records), then ``<meta charset>``/``http-equiv`` or the XML declaration, then strict UTF-8, then
uchardet's guess. A declared charset that does not decode the bytes is not trusted; bytes that no
candidate decodes, or that decode to mostly control characters (binary served as HTML), are
undecodable and quarantined.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

HTML_SUFFIXES = (".html", ".htm")
EXTRACTORS = ("resiliparse", "trafilatura")

# WHATWG: these labels mean windows-1252 on the web, and pages labelled so use its extra characters.
_WEB_ALIASES = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "windows-1252": "cp1252",
    "x-sjis": "shift_jis",
    "gb2312": "gb18030",
    "gbk": "gb18030",
}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_.\-]+)["']""", re.IGNORECASE)
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\ufffd]")
PRESCAN_BYTES = 4096  # browsers look at the first 1024; generators sometimes put long comments first
MAX_CONTROL_SHARE = 0.01


@dataclass
class DecodedHtml:
    text: str
    charset: str  # the Python codec that decoded the bytes
    charset_source: str  # bom | http | meta | utf-8 | detected
    declared: dict = field(default_factory=dict)  # charsets the page declared, by source, when different


@dataclass
class HtmlExtraction:
    text: str
    title: str | None
    meta: dict = field(default_factory=dict)


class UndecodableHtml(ValueError):
    """No candidate charset decodes the bytes into text."""


def _codec(label: str | None) -> str | None:
    """The Python codec for a charset label, or None for an unknown label."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    label = _WEB_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def declared_charsets(data: bytes, http_charset: str | None = None) -> list[tuple[str, str]]:
    """(source, label) for every charset the bytes or their HTTP headers declare, in trust order."""
    found: list[tuple[str, str]] = []
    if http_charset:
        found.append(("http", http_charset))
    head = data[:PRESCAN_BYTES]
    if m := _XML_ENCODING.match(head):
        found.append(("meta", m.group(1).decode("ascii")))
    if m := _META_CHARSET.search(head):
        found.append(("meta", m.group(1).decode("ascii")))
    return found


def decode_html(data: bytes, http_charset: str | None = None) -> DecodedHtml:
    """Decode an HTML page's bytes; raise :class:`UndecodableHtml` with what was tried."""
    for bom, codec in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le")):
        if data.startswith(bom):
            return _checked(data[len(bom) :], codec, "bom", {})
    if data.startswith(codecs.BOM_UTF16_BE):
        return _checked(data[2:], "utf-16-be", "bom", {})
    declared = declared_charsets(data, http_charset)
    tried: list[str] = []
    candidates = [(source, _codec(label)) for source, label in declared]
    candidates += [("utf-8", "utf-8")]
    errors = []
    seen = set()
    for source, codec in candidates:
        if codec is None or codec in seen:
            continue
        seen.add(codec)
        tried.append(codec)
        try:
            return _checked(data, codec, source, _declared_map(declared, codec))
        except (UnicodeDecodeError, UndecodableHtml) as err:
            errors.append(f"{codec}: {_short_error(err, data)}")
    detected = _detect(data)
    if detected and detected not in seen:
        tried.append(detected)
        try:
            return _checked(data, detected, "detected", _declared_map(declared, detected))
        except (UnicodeDecodeError, UndecodableHtml) as err:
            errors.append(f"{detected}: {_short_error(err, data)}")
    raise UndecodableHtml(f"no charset decodes the page (tried {', '.join(tried)}): {'; '.join(errors)}")


def _declared_map(declared: list[tuple[str, str]], used: str) -> dict:
    return {source: label for source, label in declared if _codec(label) != used}


def _short_error(err: Exception, data: bytes) -> str:
    if isinstance(err, UnicodeDecodeError):
        return f"invalid at byte {err.start} ({data[err.start : err.start + 8]!r})"
    return str(err)


def _detect(data: bytes) -> str | None:
    from resiliparse.parse.encoding import detect_encoding

    return _codec(detect_encoding(data, from_html_meta=False))


def _checked(data: bytes, codec: str, source: str, declared: dict) -> DecodedHtml:
    text = data.decode(codec)
    if text and len(_CONTROL.findall(text[:65536])) > MAX_CONTROL_SHARE * min(len(text), 65536):
        raise UndecodableHtml(f"decodes as {codec} to control characters (binary content)")
    return DecodedHtml(text, codec, source, declared)


# -- extraction ---------------------------------------------------------------------------------
def extract_html(
    html: str,
    extractor: str = "resiliparse",
    url: str | None = None,
    drop_nav_lines: bool = True,
    heading_marks: bool = True,
    main_container: bool = True,
) -> HtmlExtraction:
    """Main content of a page as markdown-ish text plus its title and metadata.

    An empty ``text`` means the extractor found no main content (the caller quarantines it).
    ``drop_nav_lines`` removes the navigation rows both extractors let through (see
    :func:`is_navigation_line`); how many is recorded as ``meta["nav_lines_dropped"]``.
    ``heading_marks=False`` writes headings as plain lines: Gopher's '#' rule counts every '#',
    so markdown heading marks alone fail it on ~7 % of documentation pages.
    ``main_container`` (resiliparse): where the page marks one element as its main content
    (``<main>``, ``role="main"``), extract that element whole instead of guessing with the
    main-content heuristics, which drop link- and code-dense lists (parameter lists, method
    tables; see :func:`find_main_container`).
    """
    if extractor == "resiliparse":
        result = _extract_resiliparse(html, main_container)
    elif extractor == "trafilatura":
        result = _extract_trafilatura(html, url)
    else:
        raise ValueError(f"unknown html_extractor {extractor!r}; choose one of {EXTRACTORS}")
    if drop_nav_lines and result.text:
        result.text, dropped = drop_navigation_lines(result.text)
        if dropped:
            result.meta["nav_lines_dropped"] = dropped
    if not heading_marks and result.text:
        result.text = strip_heading_marks(result.text)
    return result


_HEADING_MARK = re.compile(r"^#{1,6} ")


def strip_heading_marks(text: str) -> str:
    """``## Title`` → ``Title`` on every line outside code fences."""
    out, in_code = [], False
    for line in text.split("\n"):
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code:
            line = _HEADING_MARK.sub("", line)
        out.append(line)
    return "\n".join(out)


_NAV_LABEL = re.compile(r"\b(?:Next|Prev|Previous|Up|Top):")
_NAV_TOKEN = re.compile(r"\[?\w+\]?|<<|>>|[«»|]")
NAV_WORDS = frozenset(
    [
        "prev",
        "previous",
        "next",
        "up",
        "home",
        "index",
        "top",
        "contents",
        "back",
        "forward",
        "[index]",
        "[contents]",
        "[top]",
        "«",
        "»",
        "<<",
        ">>",
        "|",
    ]
)


def is_navigation_line(line: str) -> bool:
    """A pager row of generated documentation, not text: "Prev Home Next", "<< Up >>", or a
    Texinfo header such as "Next: Types, Previous: The Basics, Up: Using libffi [Index]"."""
    stripped = line.strip().lstrip("#-* ").strip()
    if not stripped:
        return False
    if len(_NAV_LABEL.findall(stripped)) >= 2:
        return True
    tokens = _NAV_TOKEN.findall(stripped.lower())
    return bool(tokens) and all(t in NAV_WORDS for t in tokens)


def drop_navigation_lines(text: str) -> tuple[str, int]:
    """Remove :func:`is_navigation_line` lines outside code fences; (text, lines removed)."""
    kept, dropped, in_code = [], 0, False
    for line in text.split("\n"):
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and is_navigation_line(line):
            dropped += 1
            continue
        kept.append(line)
    if not dropped:
        return text, 0
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip(), dropped


MAIN_CONTAINER = "main, [role=main]"
# Not content even inside the main element: navigation, asides, page furniture, Sphinx's ¶ links.
SKIP_IN_MAIN = [
    "nav",
    "aside",
    "footer",
    "form",
    "[role=navigation]",
    "[role=search]",
    "[role=complementary]",
    "[role=contentinfo]",
    "a.headerlink",
]
# Tables of contents inside the main element (Sphinx toctrees, docutils "contents" topics,
# DocBook's div.toc): dropped when mostly link text. Sphinx's single-page builder puts the whole
# document inside its toctree wrapper, so the class alone does not make a table of contents.
TOC_IN_MAIN = ".toctree-wrapper, .contents, div.toc, [role=doc-toc]"
TOC_LINK_SHARE = 0.5
_RESILIPARSE_OPTIONS = dict(
    preserve_formatting="minimal_html",
    list_bullets=True,
    alt_texts=False,
    links=False,
    form_fields=False,
    noscript=False,
)


def find_main_container(tree):
    """The one element a page marks as its main content (``<main>`` or ``role="main"``), or None.

    Why: resiliparse's main-content heuristics score blocks by link and text density, so on API
    reference pages they drop lists made of inline code and links (parameter lists, "Raises"
    items, method tables) while the prose around them survives. A page that names its main
    element has already said where the content is; inside it only navigation and asides
    (:data:`SKIP_IN_MAIN`) are dropped. Pages with none, or with several unrelated ones (an
    ambiguous mark-up), keep the heuristics.
    """
    nodes = tree.document.query_selector_all(MAIN_CONTAINER)
    if not nodes:
        return None
    outer = [n for n in nodes if not any(o != n and o.contains(n) for o in nodes)]
    return outer[0] if len(outer) == 1 else None


def _without_tables_of_contents(tree):
    """Drop the :data:`TOC_IN_MAIN` blocks whose text is mostly link text (outermost ones)."""
    nodes = tree.document.query_selector_all(TOC_IN_MAIN)
    if not nodes:
        return tree
    for node in [n for n in nodes if not _inside_toc(n)]:
        text = len("".join(node.text.split()))
        linked = sum(len("".join(a.text.split())) for a in node.query_selector_all("a"))
        if text and linked >= TOC_LINK_SHARE * text:
            node.decompose()
    return tree


def _inside_toc(node) -> bool:
    """Whether an ancestor is itself a :data:`TOC_IN_MAIN` block (a parent walk, not a query)."""
    parent = node.parent
    while parent is not None and parent.type == 1:  # element nodes
        classes = (parent.getattr("class") or "").split()
        if "toctree-wrapper" in classes or "contents" in classes or parent.getattr("role") == "doc-toc":
            return True
        if parent.tag == "div" and "toc" in classes:
            return True
        parent = parent.parent
    return False


def _extract_resiliparse(html: str, main_container: bool = True) -> HtmlExtraction:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(html)
    meta: dict = {}
    minimal = ""
    container = find_main_container(tree) if main_container else None
    if container is not None:
        minimal = extract_plain_text(
            _without_tables_of_contents(HTMLTree.parse(container.html)),
            main_content=False,
            skip_elements=SKIP_IN_MAIN,
            **_RESILIPARSE_OPTIONS,
        )
        if minimal.strip():
            meta["main_container"] = container.tag + (
                "[role=main]" if container.getattr("role") == "main" else ""
            )
    if not minimal.strip():
        minimal = extract_plain_text(tree, main_content=True, **_RESILIPARSE_OPTIONS)
    root = tree.document.query_selector("html")
    if root is not None and (lang := root.getattr("lang")):
        meta["html_lang"] = lang
    description = tree.document.query_selector('meta[name="description"]')
    if description is not None and (content := description.getattr("content")):
        meta["description"] = content.strip()
    title = (tree.title or "").strip() or None
    return HtmlExtraction(minimal_html_to_markdown(minimal), title, meta)


_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)


def _extract_trafilatura(html: str, url: str | None) -> HtmlExtraction:
    import trafilatura

    out = trafilatura.extract(
        html,
        url=url,
        output_format="markdown",
        include_formatting=True,
        include_tables=True,
        include_comments=False,
        with_metadata=True,
        deduplicate=False,
    )
    if not out:
        return HtmlExtraction("", None, {})
    meta: dict = {}
    if m := _FRONT_MATTER.match(out):
        for line in m.group(1).splitlines():
            key, _, value = line.partition(":")
            value = value.strip().strip('"')
            if key and value and key != "fingerprint":
                meta[key.strip()] = value
        out = out[m.end() :]
    title = meta.pop("title", None)
    return HtmlExtraction(out.replace("¶", "").strip(), title, meta)


class _MarkdownWriter(HTMLParser):
    """Resiliparse's minimal HTML (h1–h6, p, ul/ol/li, pre, br) as markdown-ish text.

    Blocks are separated by a blank line, list items by a newline; ``<pre>`` text is kept verbatim
    inside a fenced block; text between blocks becomes one paragraph per line.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.current: list[str] = []
        self.prefix = ""
        self.lists: list[list] = []  # [kind, counter] per open list
        self.in_pre = 0
        self.pre: list[str] = []
        self.last_was_item = False
        self.in_item = False

    def _flush(self, item: bool = False) -> None:
        text = " ".join("".join(self.current).split())
        self.current = []
        if text:
            prefix = self.prefix or ("  " * len(self.lists) if self.in_item else "")
            self._emit(prefix + text, item or self.in_item)
        self.prefix = ""

    def _emit(self, block: str, item: bool) -> None:
        if item and self.last_was_item and self.blocks:
            self.blocks[-1] += "\n" + block
        else:
            self.blocks.append(block)
        self.last_was_item = item

    def _flush_loose(self) -> None:
        """Text outside any block: one paragraph per source line."""
        loose = "".join(self.current)
        self.current = []
        for line in loose.splitlines():
            if line := " ".join(line.split()):
                self._emit(line, False)

    def handle_starttag(self, tag: str, attrs) -> None:
        if self.in_pre:
            return
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._flush_loose()
            self.prefix = "#" * int(tag[1]) + " "
        elif tag == "p":
            self._flush_loose()
        elif tag in ("ul", "ol"):
            self._flush_item_or_loose()
            self.lists.append([tag, 0])
        elif tag == "li":
            self._flush_item_or_loose()
            depth = max(len(self.lists) - 1, 0)
            if self.lists and self.lists[-1][0] == "ol":
                self.lists[-1][1] += 1
                marker = f"{self.lists[-1][1]}. "
            else:
                marker = "- "
            self.prefix = "  " * depth + marker
            self.in_item = True
        elif tag == "pre":
            self._flush_item_or_loose()
            self.in_pre = 1
            self.pre = []
        elif tag == "br":
            self.current.append("\n" if not self.prefix else " ")

    def _flush_item_or_loose(self) -> None:
        if self.prefix:
            self._flush(item=True)
        else:
            self._flush_loose()

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre" and self.in_pre:
            self.in_pre = 0
            code = "".join(self.pre).strip("\n")
            if code.strip():
                self._emit("```\n" + code + "\n```", False)
            return
        if self.in_pre:
            return
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6", "p"):
            self._flush()
        elif tag == "li":
            self._flush(item=True)
            self.in_item = False
        elif tag in ("ul", "ol") and self.lists:
            self._flush(item=True)
            self.lists.pop()
            if not self.lists:
                self.last_was_item = False

    def handle_data(self, data: str) -> None:
        (self.pre if self.in_pre else self.current).append(data)

    def text(self) -> str:
        if self.in_pre:
            self.handle_endtag("pre")
        if self.prefix:
            self._flush()
        self._flush_loose()
        return "\n\n".join(self.blocks)


def minimal_html_to_markdown(minimal: str) -> str:
    writer = _MarkdownWriter()
    writer.feed(minimal)
    writer.close()
    return writer.text()
