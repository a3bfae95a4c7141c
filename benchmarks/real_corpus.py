"""A corpus of real documents built from what a Debian machine already has: no downloads.

The generated corpus (``benchmarks/corpus.py``) is English-like prose from templates; throughput
and decisions on it differ from real text (longer lines, markup, code, non-ASCII, changelogs).
This script gathers real text from three places, each optional (a source that is missing on a
machine is skipped and the manifest says so):

- ``debian_doc``: the documentation of installed packages under ``/usr/share/doc`` — README,
  NEWS, changelogs, copyright files, ``.txt``/``.md``/``.rst`` files, gzip-compressed ones
  decompressed, and HTML turned into text by :class:`TextExtractor` (a small
  :mod:`html.parser` extractor: drops ``<script>``/``<style>``, breaks lines at block elements,
  unescapes entities);
- ``man``: man pages rendered to plain text by ``groff -man -Tutf8`` (``-P-cbou``: no colour, no
  overstriking), if ``groff`` is installed;
- ``python``: CPython's own documentation: the docstrings of every stdlib module, found by walking
  the stdlib with :mod:`pkgutil` and read with :mod:`ast` (``ast.get_docstring`` for the module,
  each class, function and method; nothing is imported, so no module's import-time side effects
  run), one document per module.

Deterministic: every source lists its candidates in sorted order with a stable id
(``debian_doc:/usr/share/doc/<pkg>/<file>``, ``man:<path>``, ``python:<module>``); candidates are
then ordered by the SHA-1 of their id, and the sources take turns (each held to its share of
the budget, ``SHARES``, while it has documents left) until ``--max-mb`` of UTF-8 text is reached.
Files that are not valid UTF-8 are read as Latin-1 only when they hold no NUL byte (binary files
are skipped); a document longer than
``--max-doc-kb`` is cut at the last line break before that size; documents under 64 bytes are
skipped; byte-identical documents are kept once (symlinked docs of binary packages would
otherwise repeat their source package's files). The result depends only on the files present, so
two machines with the same packages build the same corpus.

Written like the generated corpus (same :class:`benchmarks.corpus.Corpus` reader): Parquet shards
with ``id``, ``text`` and ``kind`` (the source) under ``benchmarks/out/corpus/real-m<MB>-v<V>-<hash of
the candidate list>/`` plus ``manifest.json`` (written last), and reused when present.

    .venv/bin/python -m benchmarks.real_corpus --max-mb 32
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import io
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.corpus import DEFAULT_ROOT, ROW_GROUP_DOCS, Corpus

VERSION = 1  # bump when extraction changes: the cache key includes it
DOC_ROOT = Path("/usr/share/doc")
MAN_ROOT = Path("/usr/share/man")
MAN_SECTIONS = ("man1", "man3", "man5", "man7", "man8")  # English pages only (no locale folders)
MIN_DOC_BYTES = 64
SHARD_DOCS = 2_000
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text", ".markdown")
TEXT_NAMES = ("readme", "news", "changelog", "changes", "copyright", "authors", "todo", "history", "faq")
HTML_SUFFIXES = (".html", ".htm")


# -- HTML to text --------------------------------------------------------------------------------

_BLOCK = frozenset(
    (
        *("address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption"),
        *("figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main"),
        *("nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul"),
    )
)
_SKIP = frozenset(("script", "style", "head", "noscript", "template"))


class TextExtractor(HTMLParser):
    """Visible text of an HTML page: block elements start new lines, script/style are dropped,
    runs of spaces inside a line collapse (except in ``<pre>``), entities are unescaped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag == "pre":
            self.pre += 1
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        self.parts.append(data if self.pre else " ".join(data.split()) + (" " if data[-1:].isspace() else ""))

    def text(self) -> str:
        lines = [line.strip() if not self.pre else line.rstrip() for line in "".join(self.parts).split("\n")]
        out, blank = [], False
        for line in lines:
            if line:
                out.append(line)
                blank = False
            elif not blank and out:
                out.append("")
                blank = True
        return "\n".join(out).strip()


def html_to_text(markup: str) -> str:
    parser = TextExtractor()
    parser.feed(markup)
    parser.close()
    return parser.text()


# -- reading files -------------------------------------------------------------------------------


def decode(data: bytes) -> str | None:
    """UTF-8, else Latin-1 for text without NUL bytes; None for binary data."""
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_doc_file(path: Path, limit: int) -> str | None:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
                raw = fh.read(limit * 4)  # enough for a cut document, whatever the file's size
        except (OSError, EOFError):
            return None
    text = decode(raw)
    if text is None:
        return None
    stem = path.name.removesuffix(".gz")
    if stem.lower().endswith(HTML_SUFFIXES):
        text = html_to_text(text)
    return text


def cut(text: str, limit: int) -> str:
    """At most ``limit`` UTF-8 bytes, cut at the last line break before it."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    head = data[:limit].decode("utf-8", "ignore")
    return head[: head.rfind("\n")] if "\n" in head else head


# -- the sources: candidate ids and loaders -----------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    id: str
    kind: str
    load: Callable[[], str | None]


def _is_doc_text(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(TEXT_SUFFIXES + HTML_SUFFIXES) or name.startswith(TEXT_NAMES)


def debian_doc_candidates(root: Path, limit: int) -> Iterator[Candidate]:
    if not root.is_dir():
        return
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if not _is_doc_text(path) or not path.is_file():
                continue
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            yield Candidate(f"debian_doc:{path}", "debian_doc", lambda p=path: read_doc_file(p, limit))


def render_man(path: Path) -> str | None:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            return None
    if raw.lstrip().startswith(b".so "):  # an alias of another page
        return None
    env = {**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "80"}
    try:
        done = subprocess.run(
            ["groff", "-man", "-Tutf8", "-P-cbou", "-rLL=80n", "-t"],
            input=raw,
            capture_output=True,
            timeout=30,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return decode(done.stdout) if done.returncode == 0 else None


def man_candidates(root: Path) -> Iterator[Candidate]:
    if shutil.which("groff") is None or not root.is_dir():
        return
    for section in MAN_SECTIONS:
        folder = root / section
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.is_symlink():
                yield Candidate(f"man:{path}", "man", lambda p=path: render_man(p))


def module_docstrings(source: str) -> str | None:
    """A module's docstrings in order: the module's, then each class, function and method's,
    headed by its qualified name."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    parts = []
    if doc := ast.get_docstring(tree):
        parts.append(doc)

    def walk(node, prefix: str) -> None:
        for child in node.body:
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                if doc := ast.get_docstring(child):
                    parts.append(f"{name}\n\n{doc}")
                if isinstance(child, ast.ClassDef):
                    walk(child, name + ".")

    walk(tree, "")
    return "\n\n".join(parts) or None


def stdlib_modules(root: Path, prefix: str = "") -> Iterator[tuple[str, Path]]:
    """(module name, source file) of every pure-Python module under ``root``, found with
    :func:`pkgutil.iter_modules` one folder at a time (``walk_packages`` would import every
    package to read its ``__path__``, running their import-time code)."""
    for info in sorted(pkgutil.iter_modules([str(root)]), key=lambda i: i.name):
        name = prefix + info.name
        if info.name in ("test", "tests", "idle_test", "site-packages") or info.name.startswith("test_"):
            continue
        if info.ispkg:
            init = root / info.name / "__init__.py"
            if init.is_file():
                yield name, init
            yield from stdlib_modules(root / info.name, name + ".")
        elif (root / f"{info.name}.py").is_file():
            yield name, root / f"{info.name}.py"


def python_candidates() -> Iterator[Candidate]:
    for name, path in stdlib_modules(Path(sysconfig.get_paths()["stdlib"])):
        yield Candidate(f"python:{name}", "python", lambda p=path: module_docstrings(decode(p.read_bytes())))


# Share of the byte budget each source gets while it has documents left (man pages are many and
# short, and would otherwise dominate any cap).
SHARES = {"debian_doc": 0.5, "python": 0.25, "man": 0.25}


def candidates(limit: int) -> dict[str, list[Candidate]]:
    """Every source's candidates, each list in the order of the SHA-1 of their ids."""
    every = {
        "debian_doc": list(debian_doc_candidates(DOC_ROOT, limit)),
        "man": list(man_candidates(MAN_ROOT)),
        "python": list(python_candidates()),
    }
    return {
        kind: sorted(found, key=lambda c: hashlib.sha1(c.id.encode()).digest())
        for kind, found in every.items()
        if found
    }


def loaded(
    queue: list[Candidate], workers: int = 4, ahead: int = 32
) -> Iterator[tuple[Candidate, str | None]]:
    """Candidates with their text, in order; loaded a few at a time on threads (groff and gzip run
    outside the GIL), so the order and therefore the corpus do not depend on timing."""
    with ThreadPoolExecutor(workers) as pool:
        for lo in range(0, len(queue), ahead):
            part = queue[lo : lo + ahead]
            yield from zip(part, pool.map(_load, part), strict=True)


def _load(cand: Candidate) -> str | None:
    try:
        return cand.load()
    except OSError:
        return None


# -- building ------------------------------------------------------------------------------------


def corpus_dir(max_mb: float, max_doc_kb: int, listing: list[Candidate], root: Path = DEFAULT_ROOT) -> Path:
    digest = hashlib.sha256("\n".join(c.id for c in listing).encode()).hexdigest()[:8]
    return root / f"real-m{max_mb:g}-d{max_doc_kb}-v{VERSION}-{digest}"


def ensure_real_corpus(
    max_mb: float = 32, max_doc_kb: int = 256, root: Path = DEFAULT_ROOT, log=print
) -> Corpus:
    """Open the real corpus for these caps, building it first if it is not complete on disk."""
    limit = max_doc_kb * 1024
    listing = candidates(limit)
    folder = corpus_dir(max_mb, max_doc_kb, [c for kind in sorted(listing) for c in listing[kind]], root)
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        return Corpus(folder, json.loads(manifest_path.read_text()))
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    sources = {kind: len(found) for kind, found in listing.items()}
    log(f"building real corpus from {sum(sources.values()):,} candidates ({sources}) → {folder}")
    budget = int(max_mb * 1e6)
    streams = {kind: loaded(found) for kind, found in listing.items()}
    used = dict.fromkeys(streams, 0)
    total, shards, rows, lengths, kinds, non_ascii = 0, [], [], [], Counter(), Counter()
    seen: set[bytes] = set()
    while total < budget and streams:
        # The source furthest below its share goes next (ties by name): deterministic.
        kind = min(streams, key=lambda k: (used[k] / SHARES[k], k))
        try:
            cand, text = next(streams[kind])
        except StopIteration:
            del streams[kind]
            continue
        if not text:
            continue
        text = cut(text.replace("\r\n", "\n"), limit)
        data = text.encode("utf-8", "surrogatepass")
        digest = hashlib.sha1(data).digest()
        if len(data) < MIN_DOC_BYTES or digest in seen:
            continue
        seen.add(digest)
        text = data.decode("utf-8", "replace")  # lone surrogates cannot be stored
        rows.append((cand.id, text, cand.kind))
        total += len(data)
        used[kind] += len(data)
        lengths.append(len(data))
        kinds[cand.kind] += 1
        non_ascii[cand.kind] += not text.isascii()
        if len(rows) == SHARD_DOCS:
            shards.append(_write_shard(folder, len(shards), rows))
            rows = []
    for stream in streams.values():
        stream.close()
    if rows:
        shards.append(_write_shard(folder, len(shards), rows))
    arr = np.asarray(lengths or [0], dtype=np.int64)
    manifest = {
        "origin": "real",
        "version": VERSION,
        "seed": 0,
        "docs": len(lengths),
        "bytes": int(arr.sum()),
        "max_mb": max_mb,
        "max_doc_kb": max_doc_kb,
        "candidates": dict(sources),
        "length_quantiles": {
            str(q): int(np.percentile(arr, q, method="nearest")) for q in (10, 50, 90, 99, 100)
        },
        "kinds": dict(kinds),
        "non_ascii": dict(non_ascii),
        "groff": shutil.which("groff") is not None,
        "python": sys.version.split()[0],
        "shards": shards,
    }
    temp = manifest_path.with_name(".manifest.json.tmp")
    temp.write_text(json.dumps(manifest, indent=1))
    os.replace(temp, manifest_path)
    return Corpus(folder, manifest)


def _write_shard(folder: Path, shard: int, rows: list[tuple[str, str, str]]) -> dict:
    ids, texts, kinds = zip(*rows, strict=True)
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "text": pa.array(texts, pa.large_string()),
            "kind": pa.array(kinds, pa.string()),
        }
    )
    path = folder / f"part-{shard:05d}.parquet"
    temp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temp, compression="zstd", row_group_size=ROW_GROUP_DOCS)
    os.replace(temp, path)
    return {"file": path.name, "docs": len(ids), "kinds": dict(Counter(kinds))}


def describe(manifest: dict) -> str:
    """Markdown lines: what the real corpus holds."""
    m = manifest
    q = m["length_quantiles"]
    ascii_share = sum(m["non_ascii"].values()) / max(1, m["docs"])
    parts = ", ".join(
        f"{k} {v:,} ({m['non_ascii'].get(k, 0) / v:.0%} non-ASCII)"
        for k, v in sorted(m["kinds"].items(), key=lambda kv: -kv[1])
    )
    return "\n".join(
        [
            f"- {m['docs']:,} real documents, {m['bytes'] / 1e6:,.1f} MB of UTF-8 text, built with "
            f"`benchmarks/real_corpus.py --max-mb {m['max_mb']:g}` (version {m['version']}) from this "
            "machine's /usr/share/doc, man pages (groff) and CPython's stdlib docstrings.",
            f"- {ascii_share:.1%} of documents are not pure ASCII. Sources: {parts}.",
            f"- Document length in bytes: mean {m['bytes'] / max(1, m['docs']):,.0f}, median {q['50']:,}, "
            f"p10 {q['10']:,}, p90 {q['90']:,}, p99 {q['99']:,}, max {q['100']:,}.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-mb", type=float, default=32, help="stop after this much UTF-8 text")
    parser.add_argument("--max-doc-kb", type=int, default=256, help="cut longer documents at a line break")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    args = parser.parse_args()
    corpus = ensure_real_corpus(args.max_mb, args.max_doc_kb, args.root)
    print(corpus.path)
    print(describe(corpus.manifest))


if __name__ == "__main__":
    main()
