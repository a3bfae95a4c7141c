"""Gopher repetition rules (Rae et al. 2021, table A1), with n-grams as integer hashes.

Tokens become integer ids once per document; every n-gram is then a wrapped 64-bit linear
combination of its ids. The chain computes the hashes, the top n-gram and the duplicate n-gram
counts in one compiled pass per document (:func:`ngram_char_counts`); the numpy functions below
(:func:`ngram_hashes`, :func:`top_ngram_chars`, :func:`duplicate_ngram_chars`) are the reference
the tests hold it equal to (in the reference, most documents have no repeated 5-gram, which one
hash-table pass proves, so its sequential scan runs only over the positions of n-grams that repeat).

Semantics follow the reference implementations: paragraph and line duplicates count every
repeat after the first; the top n-gram fraction is (characters of the most frequent n-gram,
spaces included) × its count / characters of the document; the duplicate n-gram fraction scans
left to right, and on each repeated n-gram counts its characters and jumps past it.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

_PARAGRAPH_SPLIT = re.compile(r"\n{2,}")
_LINE_SPLIT = re.compile(r"\n+")
# Fixed odd multipliers: n-gram hash = sum(id[i+k] * MULT[k]) mod 2**64.
MULT = np.random.default_rng(20240607).integers(1, 2**63, size=16, dtype=np.uint64) * np.uint64(
    2
) + np.uint64(1)

Verdict = tuple[str, str] | None


class GopherRepetitionParams(BaseModel):
    """Gopher's repetition thresholds (table A1)."""

    gopher_repetition: bool = Field(True, description="Run Gopher's repetition rules (table A1).")
    max_dup_para_frac: float | None = Field(
        0.30, description="Share of paragraphs that repeat an earlier one, at most."
    )
    max_dup_para_char_frac: float | None = Field(
        0.20, description="Share of characters in repeated paragraphs, at most."
    )
    max_dup_line_frac: float | None = Field(
        0.30, description="Share of lines that repeat an earlier one, at most."
    )
    max_dup_line_char_frac: float | None = Field(
        0.20, description="Share of characters in repeated lines, at most."
    )
    max_top_2gram_char_frac: float | None = Field(
        0.20, description="Share of characters in the most frequent word 2-gram, at most."
    )
    max_top_3gram_char_frac: float | None = Field(
        0.18, description="Share of characters in the most frequent word 3-gram, at most."
    )
    max_top_4gram_char_frac: float | None = Field(
        0.16, description="Share of characters in the most frequent word 4-gram, at most."
    )
    max_dup_5gram_char_frac: float | None = Field(
        0.15, description="Share of characters in word 5-grams that occur more than once, at most."
    )
    max_dup_6gram_char_frac: float | None = Field(
        0.14, description="Share of characters in word 6-grams that occur more than once, at most."
    )
    max_dup_7gram_char_frac: float | None = Field(
        0.13, description="Share of characters in word 7-grams that occur more than once, at most."
    )
    max_dup_8gram_char_frac: float | None = Field(
        0.12, description="Share of characters in word 8-grams that occur more than once, at most."
    )
    max_dup_9gram_char_frac: float | None = Field(
        0.11, description="Share of characters in word 9-grams that occur more than once, at most."
    )
    max_dup_10gram_char_frac: float | None = Field(
        0.10, description="Share of characters in word 10-grams that occur more than once, at most."
    )

    def top_ngram_limits(self) -> list[tuple[int, float]]:
        return [(n, v) for n in (2, 3, 4) if (v := getattr(self, f"max_top_{n}gram_char_frac")) is not None]

    def dup_ngram_limits(self) -> list[tuple[int, float]]:
        return [
            (n, v) for n in range(5, 11) if (v := getattr(self, f"max_dup_{n}gram_char_frac")) is not None
        ]


def duplicate_elements(items: list[str]) -> tuple[int, int]:
    """(number of repeats after the first occurrence, characters in those repeats)."""
    seen: set[str] = set()
    dups = chars = 0
    for item in items:
        if item in seen:
            dups += 1
            chars += len(item)
        else:
            seen.add(item)
    return dups, chars


def ngram_hashes(ids: np.ndarray, max_n: int) -> list[np.ndarray]:
    """hashes[n] for n = 1..max_n (index 0 unused); wraps modulo 2**64 by design."""
    out: list[np.ndarray] = [np.empty(0, dtype=np.uint64)]
    with np.errstate(over="ignore"):
        cur = ids * MULT[0]
        out.append(cur)
        for n in range(2, max_n + 1):
            if len(ids) < n:
                out.append(np.empty(0, dtype=np.uint64))
                continue
            cur = cur[:-1] + ids[n - 1 :] * MULT[n - 1]
            out.append(cur)
    return out


def top_ngram_chars(h: np.ndarray, cum: np.ndarray, n: int) -> int:
    """Characters covered by the most frequent n-gram (first seen wins ties) × its count.

    :func:`pandas.factorize` numbers the n-grams in order of first appearance, so among the most
    frequent ones the lowest number is the first seen."""
    codes = pd.factorize(h)[0]
    counts = np.bincount(codes)
    best = counts.max()
    i = int(np.argmax(codes == np.argmax(counts == best)))
    return int(cum[i + n] - cum[i] + (n - 1)) * int(best)


def duplicate_ngram_chars(h: np.ndarray, cum: np.ndarray, n: int) -> int:
    """Characters of repeated n-grams, scanning left to right and skipping past each repeat.

    The scan visits every position not inside a skip; a visited n-gram counts (and starts a skip
    of ``n``) iff an earlier visited position holds the same n-gram, else it joins the seen set.
    An n-gram that occurs once in the document can neither count nor make another count, so
    only the positions of n-grams that occur more than once are walked (in order, with the same
    rules): the same result as walking every position, in time proportional to the repeats."""
    group = pd.factorize(h)[0]
    sizes = np.bincount(group)
    if len(sizes) == len(h):
        return 0
    positions = np.flatnonzero(sizes[group] > 1)
    spans = (cum[positions + n] - cum[positions]).tolist()
    seen = bytearray(len(sizes))
    skip_until = chars = 0
    for i, g, span in zip(positions.tolist(), group[positions].tolist(), spans, strict=True):
        if i < skip_until:
            continue
        if seen[g]:
            chars += span
            skip_until = i + n
        else:
            seen[g] = 1
    return chars


def ngram_char_counts(
    ids: np.ndarray, cum: np.ndarray, top_ns: list[int], dup_ns: list[int]
) -> tuple[dict[int, int], dict[int, int]]:
    """``{n: top_ngram_chars(hashes[n], cum, n)}`` for ``top_ns`` and ``{n: duplicate_ngram_chars(...)}``
    for ``dup_ns``, the hashes of :func:`ngram_hashes`, in one compiled pass
    (:func:`refinery.text.kernels.compiled.ngram_chars`: the same 64-bit hashes, the same first-seen
    order and scan, no per-n Python and pandas calls); an n longer than the document is left out."""
    from refinery.text.kernels.compiled import ngram_chars

    top_out = np.zeros(len(top_ns), dtype=np.int64)
    dup_out = np.zeros(len(dup_ns), dtype=np.int64)
    ngram_chars(
        ids, cum, MULT, np.array(top_ns, dtype=np.int64), np.array(dup_ns, dtype=np.int64), top_out, dup_out
    )
    tops = {n: c for n, c in zip(top_ns, top_out.tolist(), strict=True) if c >= 0}
    dups = {n: c for n, c in zip(dup_ns, dup_out.tolist(), strict=True) if c >= 0}
    return tops, dups


def gopher_repetition(text: str, toks: list[str], p: GopherRepetitionParams, out: dict) -> Verdict:
    text_len = len(text) or 1

    paragraphs = _PARAGRAPH_SPLIT.split(text.strip())
    dups, chars = duplicate_elements(paragraphs)
    out["dup_para_frac"] = dups / len(paragraphs)
    out["dup_para_char_frac"] = chars / text_len
    if p.max_dup_para_frac is not None and out["dup_para_frac"] > p.max_dup_para_frac:
        return "gopher_repetition.dup_para_frac", f"{out['dup_para_frac']:.2f} > {p.max_dup_para_frac}"
    if p.max_dup_para_char_frac is not None and out["dup_para_char_frac"] > p.max_dup_para_char_frac:
        return (
            "gopher_repetition.dup_para_char_frac",
            f"{out['dup_para_char_frac']:.2f} > {p.max_dup_para_char_frac}",
        )

    lines = _LINE_SPLIT.split(text)
    dups, chars = duplicate_elements(lines)
    out["dup_line_frac"] = dups / len(lines)
    out["dup_line_char_frac"] = chars / text_len
    if p.max_dup_line_frac is not None and out["dup_line_frac"] > p.max_dup_line_frac:
        return "gopher_repetition.dup_line_frac", f"{out['dup_line_frac']:.2f} > {p.max_dup_line_frac}"
    if p.max_dup_line_char_frac is not None and out["dup_line_char_frac"] > p.max_dup_line_char_frac:
        return (
            "gopher_repetition.dup_line_char_frac",
            f"{out['dup_line_char_frac']:.2f} > {p.max_dup_line_char_frac}",
        )

    top, dup = p.top_ngram_limits(), p.dup_ngram_limits()
    max_n = max([n for n, _ in top + dup], default=0)
    if not toks or not max_n:
        return None
    # Token ids in order of first appearance (a hash table in C); only their equality matters.
    ids = pd.factorize(np.array(toks, dtype=object))[0].astype(np.uint64)
    cum = np.zeros(len(toks) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, toks), dtype=np.int64, count=len(toks)), out=cum[1:])
    top_chars, dup_chars = ngram_char_counts(ids, cum, [n for n, _ in top], [n for n, _ in dup])

    for n, limit in top:
        if len(ids) < n:
            continue
        frac = top_chars[n] / text_len
        out[f"top_{n}gram_char_frac"] = frac
        if frac > limit:
            return f"gopher_repetition.top_{n}gram", f"{frac:.3f} > {limit}"

    no_repeats_from = None  # if no n-gram repeats, no longer one can either
    for n, limit in dup:
        if len(ids) < n or (no_repeats_from is not None and n > no_repeats_from):
            out[f"dup_{n}gram_char_frac"] = 0.0
            continue
        chars = dup_chars[n]
        if chars == 0:
            no_repeats_from = n
        frac = chars / text_len
        out[f"dup_{n}gram_char_frac"] = frac
        if frac > limit:
            return f"gopher_repetition.dup_{n}gram", f"{frac:.3f} > {limit}"
    return None
