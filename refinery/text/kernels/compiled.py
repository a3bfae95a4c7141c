"""The compiled kernels (numba). Imported only by the wrappers that use them, on first use, so
``import refinery`` and ``import definitions`` do not import numba; ``cache=True`` keeps the machine
code between processes (see :mod:`refinery.text.kernels`)."""

from __future__ import annotations

import sys

import numba
import numpy as np

from refinery.text.kernels.tables import BREAK, JOINER, LETTER, PLAIN, SPACE, STRIP, WORD


def skip_blas_probe() -> bool:
    """Load numba's ``arraymath`` without its import-time BLAS probe, unless SciPy's linear algebra
    is already loaded; True when the probe was skipped.

    numba installs every registry on a process's first compile or cache load, and ``arraymath``'s
    import asks ``ensure_blas()`` whether ``scipy.linalg.cython_blas`` imports, only to choose how
    ``np.correlate`` and ``np.convolve`` are computed on floats (BLAS or a loop: the same results).
    That import is ``scipy.linalg``'s whole package, with SciPy's array-API shim walking numpy's
    namespace into ``numpy.f2py``: ~0.25 CPU s in every process that runs a kernel, for functions
    no kernel here calls. The probe sees an ImportError for the length of that one import, and
    ``ensure_blas`` is restored before anything else runs, so every linear-algebra function numba
    compiles later in the process still imports SciPy on its own first use
    (``tests/unit/test_text_kernels.py`` compiles ``np.dot`` after a kernel)."""
    if "scipy.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:
        return False
    from numba.np import linalg

    probe = linalg.ensure_blas

    def unavailable() -> None:
        raise ImportError("BLAS probe skipped by refinery.text.kernels.compiled")

    linalg.ensure_blas = unavailable
    try:
        import numba.np.arraymath  # noqa: F401  (binds the probe at import; the flag is set there)
    finally:
        linalg.ensure_blas = probe
    return True


BLAS_PROBE_SKIPPED = skip_blas_probe()


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
def _bullet(data, s, e, prefix_offsets, prefix_data):
    """Whether data[s:e] starts with one of the prefixes (UTF-8 bytes, wholly inside it)."""
    for p in range(len(prefix_offsets) - 1):
        lo, hi = prefix_offsets[p], prefix_offsets[p + 1]
        if s + (hi - lo) > e:
            continue
        matched = True
        for j in range(hi - lo):
            if data[s + j] != prefix_data[lo + j]:
                matched = False
                break
        if matched:
            return True
    return False


@numba.njit(cache=True, nogil=True, inline="always")
def _line_shares(data, stop, first_ns, last_ns, ns_dots, prefix_offsets, prefix_data):
    """(bullet, ellipsis) of a line ending at ``stop``: 1 when it starts with a bullet prefix after its
    leading whitespace (a blank line is tested from ``stop``), 1 when its last non-space is an
    ellipsis (``…`` or three dots)."""
    s = first_ns if first_ns >= 0 else stop
    bullet = 1 if _bullet(data, s, stop, prefix_offsets, prefix_data) else 0
    ellipsis = 1 if first_ns >= 0 and (last_ns == 0x2026 or ns_dots >= 3) else 0
    return bullet, ellipsis


@numba.njit(cache=True, nogil=True)
def doc_counts(offsets, data, table, prefix_offsets, prefix_data, out):
    """One streaming pass per document (see :mod:`refinery.text.kernels.doc_counts`). A joiner after
    a word character is pending until the next character says whether it joins; a line's first
    non-space byte and its last non-space character (with the run of dots ending there) are
    tracked as it goes, so no position is revisited.

    ASCII fast paths take most bytes of real text (105 MB of it: 77% ASCII word characters, 11%
    spaces, 9% other ASCII, 0.7% non-ASCII): a run of ASCII word characters is consumed in a tight
    loop over a 256-entry table (0 for bytes >= 0x80, so one lookup decides), and so are the words
    after it parted by single spaces; a space elsewhere only ends what it ends; a line feed ends
    the line; a dot extends its run; other ASCII punctuation (no '#' or break) only counts as
    "other". Every other character takes the general path, and each fast path leaves the state
    the general path would (``tests/unit/test_text_kernels.py`` holds the counts to Python's)."""
    ascii_flags = np.zeros(256, dtype=np.uint8)
    for b in range(0x80):
        ascii_flags[b] = table[b]
        if not table[b] & (WORD | SPACE | STRIP | BREAK) and b != 0x2E and b != 0x23:
            ascii_flags[b] |= PLAIN
    for d in range(len(offsets) - 1):
        i, end = offsets[d], offsets[d + 1]
        word_chars = other = words = word_length = letter_words = 0
        hashes = ellipses = dots = 0
        lines = bullets = ellipsis_lines = 0
        prev_word = pending = has_letter = False
        line_start, first_ns, last_ns, ns_dots, run_dots = i, -1, 0, 0, 0
        while i < end:
            p = i
            b = data[i]
            g = ascii_flags[b]
            if g & WORD:
                # A run of ASCII word characters: a word starts here unless one runs into it (or a
                # pending joiner joins it); no dot, break or space is inside it.
                if not prev_word:
                    if pending:
                        word_length += 1  # the joiner between two word characters
                    else:
                        words += 1
                        has_letter = False
                    ellipses += dots // 3
                    dots = 0
                    prev_word = True
                    pending = False
                i += 1
                while i < end:
                    c = ascii_flags[data[i]]
                    if not c & WORD:
                        break
                    g |= c
                    i += 1
                word_chars += i - p
                word_length += i - p
                if not has_letter and g & LETTER:
                    has_letter = True
                    letter_words += 1
                if first_ns < 0:
                    first_ns = p
                # Words parted by single spaces, the commonest stretch of text, stay in this loop: a
                # space between two ASCII word characters only ends one word and starts the next.
                while i + 1 < end and data[i] == 0x20 and ascii_flags[data[i + 1]] & WORD:
                    i += 1
                    p = i
                    words += 1
                    g = ascii_flags[data[i]]
                    i += 1
                    while i < end:
                        c = ascii_flags[data[i]]
                        if not c & WORD:
                            break
                        g |= c
                        i += 1
                    word_chars += i - p
                    word_length += i - p
                    has_letter = (g & LETTER) != 0
                    if has_letter:
                        letter_words += 1
                last_ns = np.int64(data[i - 1])
                run_dots = ns_dots = 0
                continue
            if b == 0x20:
                # A space: not a word character, joiner, break or "other"; ends a dot run.
                ellipses += dots // 3
                dots = 0
                prev_word = pending = False
                run_dots = 0
                i += 1
                continue
            if b == 0x0A:
                # A line feed: a break that is space, no joiner; ends a dot run and the line.
                ellipses += dots // 3
                dots = 0
                prev_word = pending = False
                lines += 1
                bullet, ellipsis = _line_shares(
                    data, p, first_ns, last_ns, ns_dots, prefix_offsets, prefix_data
                )
                bullets += bullet
                ellipsis_lines += ellipsis
                i += 1
                line_start, first_ns, last_ns, ns_dots, run_dots = i, -1, 0, 0, 0
                continue
            if b == 0x2E:
                # A dot: "other", a joiner; counted in runs for "..." at the end.
                other += 1
                pending = prev_word and (g & JOINER) != 0
                prev_word = False
                dots += 1
                if first_ns < 0:
                    first_ns = p
                last_ns = np.int64(b)
                run_dots += 1
                ns_dots = run_dots
                i += 1
                continue
            if g & PLAIN:
                # Other ASCII punctuation ("other", maybe a joiner): not a dot, '#', space or break.
                other += 1
                pending = prev_word and (g & JOINER) != 0
                prev_word = False
                ellipses += dots // 3
                dots = 0
                if first_ns < 0:
                    first_ns = p
                last_ns = np.int64(b)
                run_dots = ns_dots = 0
                i += 1
                continue
            if b < 0x80:
                cp = np.int64(b)
                i += 1
            else:
                cp, i = decode(data, i)
            f = table[cp]
            if f & WORD:
                word_chars += 1
                if not prev_word:
                    if pending:
                        word_length += 1  # the joiner between two word characters
                    else:
                        words += 1
                        has_letter = False
                word_length += 1
                if not has_letter and f & LETTER:
                    has_letter = True
                    letter_words += 1
                prev_word = True
                pending = False
            else:
                if not f & SPACE:
                    other += 1
                pending = prev_word and (f & JOINER) != 0
                prev_word = False
            if cp == 0x2E:
                dots += 1
            else:
                ellipses += dots // 3
                dots = 0
                if cp == 0x23:
                    hashes += 1
                elif cp == 0x2026:
                    ellipses += 1
            if f & BREAK:
                lines += 1
                bullet, ellipsis = _line_shares(
                    data, p, first_ns, last_ns, ns_dots, prefix_offsets, prefix_data
                )
                bullets += bullet
                ellipsis_lines += ellipsis
                if cp == 0x0D and i < end and data[i] == 0x0A:
                    i += 1  # "\r\n" is one break; "\n" is space, which "\r" already was
                line_start, first_ns, last_ns, ns_dots, run_dots = i, -1, 0, 0, 0
            elif f & STRIP:
                run_dots = 0
            else:
                if first_ns < 0:
                    first_ns = p
                last_ns = cp
                run_dots = run_dots + 1 if cp == 0x2E else 0
                ns_dots = run_dots
        ellipses += dots // 3
        if line_start < end or offsets[d] == end:  # the last line, or an empty text's one line
            lines += 1
            bullet, ellipsis = _line_shares(
                data, end, first_ns, last_ns, ns_dots, prefix_offsets, prefix_data
            )
            bullets += bullet
            ellipsis_lines += ellipsis
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


@numba.njit(cache=True, nogil=True, inline="always")
def _end_run(out, pos, newlines):
    """Write a finished run of spaces and LFs at ``pos``: one space when it held no LF, else one or
    two LFs (as many as it held, at most two); returns the position after it."""
    if newlines == 0:
        out[pos] = 0x20
        return pos + 1
    for _ in range(min(newlines, 2)):
        out[pos] = 0x0A
        pos += 1
    return pos


@numba.njit(cache=True, nogil=True)
def tidy(offsets, data, table, invisible, spaces, trim, strip_invisible, collapse, out_offsets, out):
    """Per document: (``strip_invisible``) every CR a LF, a LF right after a CR dropped, code points
    flagged ``invisible`` dropped; then (``collapse``) each run of code points flagged ``spaces`` and
    LFs written as one space when it holds no LF, else as one or two LFs (as many as it holds, at most
    two), and the code points flagged ``trim`` cut from both ends. Writes ``out``/``out_offsets``."""
    # ASCII bytes no step acts on: copied as they are while no space run is pending.
    plain = np.zeros(256, dtype=np.bool_)
    for b in range(0x80):
        acted = b == 0x0A or (collapse and table[b] & spaces != 0)
        acted = acted or (strip_invisible and (b == 0x0D or table[b] & invisible != 0))
        plain[b] = not acted
    pos = 0
    out_offsets[0] = 0
    for d in range(len(offsets) - 1):
        i, end, start = offsets[d], offsets[d + 1], pos
        in_run = False
        newlines = 0
        while i < end:
            b = data[i]
            if not in_run:
                if plain[b]:  # ASCII bytes no step acts on, outside a space run: copied in a tight loop
                    out[pos] = b
                    pos += 1
                    i += 1
                    while i < end:
                        b = data[i]
                        if not plain[b]:
                            break
                        out[pos] = b
                        pos += 1
                        i += 1
                    if i == end:
                        break
                if b == 0x20 and i + 1 < end and plain[data[i + 1]]:  # a lone space between such bytes
                    out[pos] = 0x20
                    out[pos + 1] = data[i + 1]
                    pos += 2
                    i += 2
                    continue
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
                    pos = _end_run(out, pos, newlines)
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
                pos = _end_run(out, pos, newlines)
            lo, hi = _trimmed(out, start, pos, table, trim)
            if lo > start:
                for j in range(lo, hi):
                    out[start + j - lo] = out[j]
            pos = start + (hi - lo)
        out_offsets[d + 1] = pos


@numba.njit(cache=True, nogil=True)
def _first_seen_codes(h, m):
    """Codes of h[:m] numbered in order of first appearance (equal values, equal codes), the number
    of codes, and each code's first position: ``pandas.factorize`` of the values, as an open-addressing
    table over the exact 64-bit values."""
    size = 16
    while size < 2 * m:
        size <<= 1
    mask = np.uint64(size - 1)
    keys = np.empty(size, dtype=np.uint64)
    slots = np.full(size, -1, dtype=np.int64)
    codes = np.empty(m, dtype=np.int64)
    first = np.empty(m, dtype=np.int64)
    k = 0
    for i in range(m):
        x = h[i]
        s = (x ^ (x >> np.uint64(31))) & mask
        while slots[s] >= 0 and keys[s] != x:
            s = (s + np.uint64(1)) & mask
        if slots[s] < 0:
            slots[s] = k
            keys[s] = x
            first[k] = i
            k += 1
        codes[i] = slots[s]
    return codes, k, first


@numba.njit(cache=True, nogil=True)
def ngram_chars(ids, cum, mult, top_ns, dup_ns, top_out, dup_out):
    """For word n-grams hashed as ``sum(ids[i + k] * mult[k])`` (mod 2**64, as
    :func:`refinery.filters.gopher_repetition.ngram_hashes`): per n of ``top_ns``, the characters of the
    most frequent n-gram (first seen wins ties) times its count; per n of ``dup_ns``, the characters of
    repeated n-grams in a left-to-right scan that skips past each repeat. ``cum``: cumulative token
    lengths. An n longer than the document gives -1."""
    m = len(ids)
    max_n = 0
    for n in top_ns:
        max_n = max(max_n, n)
    for n in dup_ns:
        max_n = max(max_n, n)
    cur = np.zeros(m, dtype=np.uint64)
    for n in range(1, max_n + 1):
        if m < n:
            break
        step = mult[n - 1]
        for i in range(m - n + 1):
            cur[i] = cur[i] + ids[i + n - 1] * step
        count = m - n + 1
        for t in range(len(top_ns)):
            if top_ns[t] == n:
                codes, k, first = _first_seen_codes(cur, count)
                counts = np.zeros(k, dtype=np.int64)
                for i in range(count):
                    counts[codes[i]] += 1
                best, code = 0, 0
                for c in range(k):
                    if counts[c] > best:
                        best, code = counts[c], c
                i = first[code]
                top_out[t] = (cum[i + n] - cum[i] + (n - 1)) * best
        for t in range(len(dup_ns)):
            if dup_ns[t] == n:
                codes, k, first = _first_seen_codes(cur, count)
                seen = np.zeros(k, dtype=np.bool_)
                chars, i = 0, 0
                while i < count:
                    if seen[codes[i]]:
                        chars += cum[i + n] - cum[i]
                        i += n
                    else:
                        seen[codes[i]] = True
                        i += 1
                dup_out[t] = chars
    for t in range(len(top_ns)):
        if m < top_ns[t]:
            top_out[t] = -1
    for t in range(len(dup_ns)):
        if m < dup_ns[t]:
            dup_out[t] = -1
