"""The heuristic chain's per-document counts in one compiled pass over a batch's UTF-8 bytes.

What Gopher quality reads of a document, without listing its words or lines:

- the word counts of :class:`refinery.text.word_counts.WordCounts` (``\\w`` characters, other
  non-space characters, words of ``\\w+(?:['’.\\-]\\w+)*``, their total length, words holding a
  letter): a character is in a word iff it is ``\\w``, or a joiner with ``\\w`` on both sides in the
  same document (the argument of :mod:`refinery.text.word_counts`, here per document);
- ``text.count("#")``, ``text.count("...")`` (non-overlapping: a run of k dots holds k // 3) and
  ``text.count("…")``;
- ``len(text.splitlines() or [text])``, and how many of those lines, ``lstrip``-ed, start with one
  of the bullet prefixes, and, ``rstrip``-ed, end in ``...`` or ``…``.

Lengths are code points, as Python's ``len``. Prefixes are compared as UTF-8 bytes, which for valid
UTF-8 is the same as comparing code points, and must end inside the line, as ``startswith`` on the
line does. The classes come from :func:`refinery.text.kernels.tables.char_flags`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from refinery.text.kernels.tables import char_flags
from refinery.text.kernels.utf8 import buffers
from refinery.text.word_counts import DocCounts, DocShape

COLUMNS = (
    "word_chars",
    "other_chars",
    "words",
    "word_length",
    "letter_words",
    "hashes",
    "ellipses",
    "lines",
    "bullet_lines",
    "ellipsis_lines",
)


@dataclass(frozen=True)
class BatchCounts:
    """Per document of a batch, one int64 array per name of :data:`COLUMNS` (see the module
    docstring); ``bullet_prefixes``: the prefixes ``bullet_lines`` was counted with."""

    counts: np.ndarray  # shape (documents, len(COLUMNS))
    bullet_prefixes: tuple[str, ...]

    def column(self, name: str) -> np.ndarray:
        return self.counts[:, COLUMNS.index(name)]

    def tokens(self) -> np.ndarray:
        """Tokens per document (words and single symbol characters): the words, plus the other
        non-space characters less those inside words (joiners such as the apostrophe of "don't")."""
        return (
            self.column("words")
            + self.column("other_chars")
            - (self.column("word_length") - self.column("word_chars"))
        )

    def rows(self, index: np.ndarray | None = None) -> list[DocCounts]:
        """One :class:`DocCounts` per document (those at ``index`` when given), with its
        :class:`DocShape` (plain ints)."""
        prefixes = self.bullet_prefixes
        out = []
        picked = self.counts if index is None else self.counts[index]
        tokens = self.tokens() if index is None else self.tokens()[index]
        for (wc, oc, w, wl, lw, h, e, ln, bl, el), t in zip(picked.tolist(), tokens.tolist(), strict=True):
            out.append(DocCounts(wc, oc, w, wl, lw, t, DocShape(h, e, ln, bl, el, prefixes)))
        return out


def batch_counts(arr: pa.Array, bullet_prefixes: Sequence[str]) -> BatchCounts:
    """:class:`BatchCounts` of a ``large_string`` array (:func:`refinery.text.kernels.utf8.large_strings`)."""
    offsets, data = buffers(arr)
    encoded = [p.encode("utf-8") for p in bullet_prefixes]
    prefix_offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in encoded], out=prefix_offsets[1:])
    prefix_data = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)
    out = np.zeros((len(arr), len(COLUMNS)), dtype=np.int64)
    _kernel()(offsets, data, char_flags(), prefix_offsets, prefix_data, out)
    return BatchCounts(out, tuple(bullet_prefixes))


def _kernel():
    """The compiled pass: numba is imported, and the machine code loaded or built, on first use."""
    from refinery.text.kernels.compiled import doc_counts

    return doc_counts
