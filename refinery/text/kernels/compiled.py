"""The compiled kernels (numba). Imported only by the wrappers that use them, on first use, so
``import refinery`` and ``import definitions`` do not import numba; ``cache=True`` keeps the machine
code between processes (see :mod:`refinery.text.kernels`)."""

from __future__ import annotations

import numba
import numpy as np

from refinery.text.kernels.tables import BREAK, JOINER, LETTER, SPACE, STRIP, WORD


@numba.njit(cache=True, nogil=True, inline="always")
def decode(data, i):
    b = data[i]
    if b < 0x80:
        return np.int64(b), i + 1
    if b < 0xE0:
        return ((np.int64(b) & 0x1F) << 6) | (np.int64(data[i + 1]) & 0x3F), i + 2
    if b < 0xF0:
        return (
            ((np.int64(b) & 0x0F) << 12)
            | ((np.int64(data[i + 1]) & 0x3F) << 6)
            | (np.int64(data[i + 2]) & 0x3F)
        ), i + 3
    return (
        ((np.int64(b) & 0x07) << 18)
        | ((np.int64(data[i + 1]) & 0x3F) << 12)
        | ((np.int64(data[i + 2]) & 0x3F) << 6)
        | (np.int64(data[i + 3]) & 0x3F)
    ), i + 4


@numba.njit(cache=True, nogil=True)
def doc_counts(offsets, data, table, prefix_offsets, prefix_data, out):
    n_docs = len(offsets) - 1
    longest = 0
    for d in range(n_docs):
        longest = max(longest, offsets[d + 1] - offsets[d])
    cps = np.empty(longest + 1, dtype=np.int64)
    flags = np.empty(longest + 1, dtype=np.uint8)
    starts = np.empty(longest + 2, dtype=np.int64)  # byte position of each code point
    n_prefixes = len(prefix_offsets) - 1
    for d in range(n_docs):
        i, end, n = offsets[d], offsets[d + 1], 0
        while i < end:
            starts[n] = i
            cp, i = decode(data, i)
            cps[n] = cp
            flags[n] = table[cp]
            n += 1
        starts[n] = end
        word_chars = other = words = word_length = letter_words = 0
        hashes = ellipses = dots = 0
        in_word = False
        has_letter = False
        for k in range(n):
            f = flags[k]
            cp = cps[k]
            if f & WORD:
                word_chars += 1
                w = True
            elif f & SPACE:
                w = False
            else:
                other += 1
                w = (
                    (f & JOINER) != 0
                    and 0 < k < n - 1
                    and (flags[k - 1] & WORD) != 0
                    and (flags[k + 1] & WORD) != 0
                )
            if w:
                word_length += 1
                if not in_word:
                    words += 1
                    has_letter = False
                if not has_letter and f & LETTER:
                    has_letter = True
                    letter_words += 1
            in_word = w
            if cp == 0x2E:
                dots += 1
            else:
                ellipses += dots // 3
                dots = 0
                if cp == 0x23:
                    hashes += 1
                elif cp == 0x2026:
                    ellipses += 1
        ellipses += dots // 3
        # Lines as str.splitlines cuts them; an empty text is one empty line ("or [text]").
        lines = bullets = ellipsis_lines = 0
        k = 0
        while k < n or (k == 0 and n == 0):
            e = k
            while e < n and not flags[e] & BREAK:
                e += 1
            lines += 1
            s = k
            while s < e and flags[s] & STRIP:
                s += 1
            for p in range(n_prefixes):
                lo, hi = prefix_offsets[p], prefix_offsets[p + 1]
                size = hi - lo
                if starts[s] + size > starts[e]:
                    continue
                matched = True
                for j in range(size):
                    if data[starts[s] + j] != prefix_data[lo + j]:
                        matched = False
                        break
                if matched:
                    bullets += 1
                    break
            r = e
            while r > s and flags[r - 1] & STRIP:
                r -= 1
            if r > s and (
                cps[r - 1] == 0x2026
                or (r - s >= 3 and cps[r - 1] == 0x2E and cps[r - 2] == 0x2E and cps[r - 3] == 0x2E)
            ):
                ellipsis_lines += 1
            if e >= n:
                break
            k = e + 2 if cps[e] == 0x0D and e + 1 < n and cps[e + 1] == 0x0A else e + 1
        row = out[d]
        row[0], row[1], row[2], row[3], row[4] = word_chars, other, words, word_length, letter_words
        row[5], row[6], row[7], row[8], row[9] = hashes, ellipses, lines, bullets, ellipsis_lines


@numba.njit(cache=True, nogil=True)
def _trimmed(out, lo, hi, table, trim):
    """[lo', hi') inside out[lo:hi] without the leading and trailing code points flagged ``trim``."""
    while lo < hi:
        cp, nxt = decode(out, lo)
        if not table[cp] & trim:
            break
        lo = nxt
    while hi > lo:
        k = hi - 1
        while out[k] & 0xC0 == 0x80:  # back to the lead byte
            k -= 1
        cp, _ = decode(out, k)
        if not table[cp] & trim:
            break
        hi = k
    return lo, hi


@numba.njit(cache=True, nogil=True)
def tidy(offsets, data, table, invisible, spaces, trim, strip_invisible, collapse, out_offsets, out):
    """Per document: (``strip_invisible``) every CR a LF, a LF right after a CR dropped, code points
    flagged ``invisible`` dropped; then (``collapse``) each run of code points flagged ``spaces`` and
    LFs written as one space when it holds no LF, else as one or two LFs (as many as it holds, at most
    two), and the code points flagged ``trim`` cut from both ends. Writes ``out``/``out_offsets``."""
    pos = 0
    out_offsets[0] = 0
    for d in range(len(offsets) - 1):
        i, end, start = offsets[d], offsets[d + 1], pos
        in_run = False
        newlines = 0
        while i < end:
            first = i
            cp, i = decode(data, i)
            if strip_invisible:
                if cp == 0x0D:
                    cp = 0x0A
                    if i < end and data[i] == 0x0A:
                        i += 1
                elif table[cp] & invisible:
                    continue
            if collapse:
                if cp == 0x0A:
                    in_run = True
                    newlines += 1
                    continue
                if table[cp] & spaces:
                    in_run = True
                    continue
                if in_run:
                    if newlines == 0:
                        out[pos] = 0x20
                        pos += 1
                    else:
                        for _ in range(min(newlines, 2)):
                            out[pos] = 0x0A
                            pos += 1
                    in_run = False
                    newlines = 0
            if cp == 0x0A:
                out[pos] = 0x0A
                pos += 1
            else:
                for j in range(first, i):
                    out[pos] = data[j]
                    pos += 1
        if collapse:
            if in_run:
                if newlines == 0:
                    out[pos] = 0x20
                    pos += 1
                else:
                    for _ in range(min(newlines, 2)):
                        out[pos] = 0x0A
                        pos += 1
            lo, hi = _trimmed(out, start, pos, table, trim)
            if lo > start:
                for j in range(lo, hi):
                    out[start + j - lo] = out[j]
            pos = start + (hi - lo)
        out_offsets[d + 1] = pos
