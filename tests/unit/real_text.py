"""Real text for tests, built at test time from what every machine with CPython has.

The docstrings of a fixed list of stdlib modules (module, classes, functions, methods, via
:mod:`inspect`), one document per module and one per class, plus, where the machine has them, the
first plain-text files under ``/usr/share/doc`` in sorted order (Debian package documentation,
gzip-compressed ones decompressed). Nothing is downloaded or bundled, and the result depends only
on the interpreter and the installed packages.
"""

from __future__ import annotations

import gzip
import importlib
import inspect
from functools import cache
from pathlib import Path

MODULES = (
    "argparse", "asyncio", "collections", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "email.message", "enum", "fractions", "functools", "html", "html.parser", "http.client", "inspect",
    "ipaddress", "itertools", "json", "logging", "os", "pathlib", "pickle", "re", "shutil", "socket",
    "statistics", "string", "subprocess", "tarfile", "textwrap", "threading", "typing", "unicodedata",
    "unittest", "urllib.parse", "xml.etree.ElementTree", "zipfile",
)  # fmt: skip


def _docstrings(module) -> list[str]:
    docs = [inspect.getdoc(module) or ""]
    for name, member in sorted(vars(module).items()):
        if name.startswith("_") or getattr(member, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(member):
            parts = [f"{name}\n\n{inspect.getdoc(member) or ''}"]
            for attr, value in sorted(vars(member).items()):
                if not attr.startswith("_") and callable(value) and (doc := inspect.getdoc(value)):
                    parts.append(f"{name}.{attr}\n\n{doc}")
            docs.append("\n\n".join(parts))
        elif inspect.isfunction(member) and (doc := inspect.getdoc(member)):
            docs[0] += f"\n\n{name}\n\n{doc}"
    return [d for d in docs if len(d) > 40]


def _debian_docs(limit: int) -> list[str]:
    root, out = Path("/usr/share/doc"), []
    if not root.is_dir():
        return out
    for path in sorted(root.rglob("*")):
        if len(out) >= limit:
            break
        name = path.name.lower()
        if not path.is_file() or not (name.startswith(("readme", "changelog", "news")) or ".txt" in name):
            continue
        try:
            data = path.read_bytes()
            data = gzip.decompress(data) if name.endswith(".gz") else data
            text = data.decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
            continue
        if "\x00" not in text and len(text) > 40:
            out.append(text[:200_000])
    return out


@cache
def real_documents(debian_limit: int = 150) -> tuple[str, ...]:
    docs: list[str] = []
    for name in MODULES:
        try:
            docs += _docstrings(importlib.import_module(name))
        except ImportError:
            continue
    return tuple(docs + _debian_docs(debian_limit))
