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
