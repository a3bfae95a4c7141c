"""Redaction of personal data: e-mail addresses, phone numbers, IP addresses, payment cards.

Each detector is a regex for candidates plus a validator, because bare patterns over-match:
card numbers must pass the Luhn check, IPs must parse with :mod:`ipaddress`, phone numbers must
have a plausible digit count and a phone-like shape (separators, a ``+`` or parentheses) so
that years, prices and ISBNs are left alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refinery.clean.ftfy_gate import every_code_point, re2_class

try:  # the regex parser behind `re` (public as sre_parse before 3.11)
    import re._parser as sre_parse
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore[no-redef]

PII_KINDS = ("email", "phone", "ip", "credit_card")

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}\b"
)
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_HEX = "[0-9A-Fa-f]"
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}:){1,7}(?::|(?::[0-9A-Fa-f]{1,4}){1,7}|[0-9A-Fa-f]{1,4})(?![\w:])"
)
_PHONE_INTERNATIONAL = (
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"  # +44 20 7946 0958
)
_PHONE_NATIONAL = (
    r"\(\d{3}\)[ .-]?\d{3}[ .-]?\d{4}"  # (555) 123-4567
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-123-4567, 555.123.4567
    r"|\d{3} \d{3} \d{4}"  # 555 123 4567
    r"|0\d{2,4}[ -]\d{3,4}[ -]\d{3,4}"  # 020 7946 0958
)
_PHONE = re.compile(rf"(?<![\w+])(?:{_PHONE_INTERNATIONAL}|{_PHONE_NATIONAL})(?![\w])")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_ok(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_valid(digits)


def _ipv4_ok(match: str) -> bool:
    try:
        ipaddress.IPv4Address(match)
    except ValueError:
        return False
    return True


def _ipv6_ok(match: str) -> bool:
    # _IPV6 matches hex digits and colons only, so its alphanumerics are the non-colons
    colons = match.count(":")
    if colons < 2 or len(match) - colons < 2:
        return False
    if colons != 7 and "::" not in match:
        # ipaddress's own rule, decided before it parses: without "::" an address has exactly
        # eight groups (no "." can occur here, so no IPv4 tail). Times such as 10:23:45 in
        # changelogs are most of this detector's candidates.
        return False
    try:
        ipaddress.IPv6Address(match)
    except ValueError:
        return False
    return True


_PHONE_SEPARATORS = " .-+()"  # every character of a _PHONE match is one of these or a \d (Nd) digit


def _phone_ok(match: str) -> bool:
    digits = len(match) - sum(map(match.count, _PHONE_SEPARATORS))
    return 7 <= digits <= 15


def accept_all(match: str) -> bool:
    """The validator of a detector whose pattern alone decides (e-mail addresses)."""
    return True


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern
    valid: Callable[[str], bool]
    # cheap pre-check that skips the regex on most texts: a necessary condition for a match that
    # ``valid`` accepts (it never changes a result, so the batch path, which reads lines, skips it)
    needs: Callable[[str], bool]
    name: str  # the detector's own RE2 candidate (:func:`candidates`): IPv4 and IPv6 apart


# Order matters: card numbers before phones (a card's digit groups look like a phone number),
# IPv6 before phones (hex groups of digits) and e-mails before everything (digits in user names).
DETECTORS = (
    Detector("email", _EMAIL, accept_all, lambda t: "@" in t, "email"),
    Detector("credit_card", _CARD, _card_ok, lambda t: True, "credit_card"),
    Detector("ip", _IPV6, _ipv6_ok, lambda t: "::" in t or t.count(":") >= 5, "ipv6"),
    Detector("ip", _IPV4, _ipv4_ok, lambda t: "." in t, "ipv4"),
    Detector("phone", _PHONE, _phone_ok, lambda t: True, "phone"),
)

_HAS_DIGIT_RUN = re.compile(r"\d\d")


def redact(
    text: str, kinds: frozenset[str] | set[str], placeholder: str = "<{kind}>"
) -> tuple[str, dict[str, int]]:
    """Replace detected PII with a placeholder; return the text and counts per kind."""
    return _redact(text, kinds, placeholder)


def _replacer(det: Detector, token: str, counts: dict[str, int]):
    """``re.sub`` callback: a candidate that passes ``det.valid`` becomes ``token`` and is counted."""

    def replace(m: re.Match) -> str:
        if det.valid(m.group(0)):
            counts[det.kind] += 1
            return token
        return m.group(0)

    return replace


def _redact(text: str, kinds: frozenset[str] | set[str], placeholder: str) -> tuple[str, dict[str, int]]:
    counts = dict.fromkeys(PII_KINDS, 0)
    has_digits = _HAS_DIGIT_RUN.search(text) is not None
    for det in DETECTORS:
        if det.kind not in kinds or not det.needs(text) or (det.kind != "email" and not has_digits):
            continue
        _replace = _replacer(det, placeholder.format(kind=det.kind.upper()), counts)
        text = det.pattern.sub(_replace, text)
    return text, counts


# -- batch path: RE2 pre-checks over the whole batch, the exact Python detectors only on candidates ----


@cache
def candidates() -> dict[str, str]:
    """RE2 patterns, one per detector (by :attr:`Detector.name`), that match wherever it can
    replace something: the detector's pattern with its lookarounds dropped (a match of the whole is
    a match of the rest), or a shorter part of it, or (IPv6) what every match its validator accepts
    holds. A line without its candidate cannot change under that detector. Built on first use:
    Python's ``\\d`` (Unicode category Nd, where RE2's is ASCII) is spelled out from the
    interpreter's own regex engine."""
    spans = [m.span() for m in re.finditer(r"\d+", every_code_point())]
    nd = re2_class(c + (0x800 if c >= 0xD800 else 0) for a, b in spans for c in range(a, b))
    patterns = {
        # any e-mail match has a local-part character, "@", a domain character
        "email": r"[A-Za-z0-9._%+-]@[A-Za-z0-9-]",
        # 13 digits with optional single separators: the first 13 digits of any card match
        "credit_card": rf"{nd}(?:[ -]?{nd}){{12}}",
        # where a match _ipv6_ok accepts can be: it holds "::" (so it opens with hex groups and
        # then "::": each of _IPV6's groups holds a digit) or is eight groups (seven colons).
        # Times such as 15:35:01, most of _IPV6's matches in changelogs, are none. It reads nothing
        # outside the match (not what the lookbehind sees): tokens_inert's proof needs that.
        "ipv6": rf"(?:{_HEX}{{1,4}}:){{1,7}}:|(?:{_HEX}{{1,4}}:){{7}}{_HEX}{{1,4}}",
        "ipv4": rf"(?:{nd}{{1,3}}\.){{3}}{nd}{{1,3}}",
        # a national form (each holds 9 or 10 digits), or an international one with the 7 digits
        # _phone_ok asks for: its digits come after "+" with separators from " .-()" between them
        # (time zones such as +0200 hold 4, and are most of the international form's matches)
        "phone": rf"\+(?:[ .()-]*{nd}){{7}}|{_PHONE_NATIONAL.replace(chr(92) + 'd', nd)}",
    }
    if any("(?<" in p or "(?!" in p for p in patterns.values()):
        raise RuntimeError("a detector's lookarounds changed: update the candidate patterns")
    if set(patterns) != {det.name for det in DETECTORS}:
        raise RuntimeError("every detector needs its candidate pattern")
    return patterns


@cache
def any_candidate(names: tuple[str, ...]) -> str:
    """One RE2 pattern matching wherever any of the detectors ``names``' candidate patterns does
    (their alternation): a string it misses holds no candidate of any of them."""
    return "|".join(f"(?:{candidates()[name]})" for name in names)


def _mask(arr: pa.Array | pa.ChunkedArray, pattern: str) -> np.ndarray:
    """Where ``pattern`` matches (a null: no)."""
    found = pc.match_substring_regex(arr, pattern)
    return (found.fill_null(False) if found.null_count else found).to_numpy(zero_copy_only=False)


def _masks_of_hits(arr: pa.Array | pa.ChunkedArray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """:func:`candidate_masks` in two levels: one scan of every string for any candidate, then
    each detector's pattern only over the strings that hold one (on the real-text corpus, 7 % of
    the lines of the documents with a candidate; the alternation's scan costs about one's)."""
    hit = np.flatnonzero(_mask(arr, any_candidate(names)))
    found = arr.take(pa.array(hit, pa.int64())) if len(hit) else None
    out = {}
    for name in names:
        mask = np.zeros(len(arr), dtype=bool)
        if found is not None:
            mask[hit[_mask(found, candidates()[name])]] = True
        out[name] = mask
    return out


@cache
def alphabet(name: str) -> frozenset[str]:
    """Every character a match of the detector ``name`` can hold (what its regex consumes; its
    lookarounds and ``\\b`` consume nothing), read from the parsed pattern."""
    (det,) = (det for det in DETECTORS if det.name == name)
    return frozenset(_consumed(sre_parse.parse(det.pattern.pattern, det.pattern.flags).data))


def _consumed(items) -> set[str]:
    chars: set[str] = set()
    for op, av in items:
        if op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT, sre_parse.AT):
            continue
        if op is sre_parse.LITERAL:
            chars.add(chr(av))
        elif op is sre_parse.IN:
            chars |= _class_members(av)
        elif op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT):
            chars |= _consumed(av[2])
        elif op is sre_parse.SUBPATTERN:
            chars |= _consumed(av[3])
        elif op is sre_parse.BRANCH:
            for branch in av[1]:
                chars |= _consumed(branch)
        else:
            raise RuntimeError(f"a PII pattern holds {op}: extend pii._consumed")
    return chars


_CATEGORIES = {"CATEGORY_DIGIT": r"\d"}


@cache
def _category(name: str) -> frozenset[str]:
    """The characters of a regex category (Python's own, over every code point), once a process."""
    return frozenset(re.findall(_CATEGORIES[name], every_code_point()))


def _class_members(items) -> set[str]:
    chars: set[str] = set()
    for op, av in items:
        if op is sre_parse.LITERAL:
            chars.add(chr(av))
        elif op is sre_parse.RANGE:
            chars.update(map(chr, range(av[0], av[1] + 1)))
        elif op is sre_parse.CATEGORY and str(av) in _CATEGORIES:
            chars |= _category(str(av))
        else:
            raise RuntimeError(f"a PII pattern's class holds {op} {av}: extend pii._class_members")
    return chars


@cache
def tokens_inert(pairs: tuple[tuple[str, str], ...]) -> bool:
    """True when no replacement can give a later detector a match: ``pairs`` are the enabled
    detectors' (name, token) in order, and for each token and each detector after it, the token is
    not empty, starts and ends with characters that detector's matches cannot hold
    (:func:`alphabet`), and holds no candidate of it. Then a match of a later detector can neither
    hold nor cross a token (it would be a run of its alphabet reaching past the token's edge, or a
    candidate inside the token), so it lies in text the line held before, where the later
    detector's own candidate flagged it: the lines the earlier detectors changed need no recheck."""
    for at, (_, token) in enumerate(pairs):
        for name, _ in pairs[at + 1 :]:
            letters = alphabet(name)
            if not token or token[0] in letters or token[-1] in letters:
                return False
            try:
                held = pc.match_substring_regex(pa.array([token]), candidates()[name])[0].as_py()
            except (UnicodeEncodeError, pa.ArrowInvalid):  # a token Arrow cannot hold: not proven inert
                return False
            if held:
                return False
    return True


def _enabled(kinds: frozenset[str] | set[str]) -> tuple[str, ...]:
    return tuple(det.name for det in DETECTORS if det.kind in kinds)


def candidate_masks(arr: pa.Array, kinds: frozenset[str] | set[str]) -> dict[str, np.ndarray]:
    """Per detector of an enabled kind (by name), per string: could it match? False guarantees it
    cannot."""
    names = _enabled(kinds)
    return _masks_of_hits(arr, names) if names else {}


def redact_batch(
    texts: Sequence[str],
    arr: pa.Array | pa.ChunkedArray,
    kinds: frozenset[str] | set[str],
    placeholder: str = "<{kind}>",
) -> tuple[list[str], list[dict[str, int]]]:
    """:func:`redact` over a batch (``arr`` holds the same strings), with the same results.

    A document where no enabled detector's RE2 candidate matches cannot change (one scan of the
    batch for their alternation). In the others, the detectors run line by line, each only on the
    lines where its own candidate matched, and on the lines an earlier detector changed where its
    candidate matches the new line (rechecked in RE2 for the whole batch at once): no detector
    pattern can match a line break or see past one (their classes hold no whitespace but the
    space, and a lookaround at a line edge sees ``\n``, which none of them lists, exactly as it
    sees the end of a lone line), so a line's matches are the same alone as in the document, and
    a line where the candidate of a detector does not match holds none of its matches. The
    detectors keep :func:`redact`'s order within each document (the loop runs them in turn over
    the batch's documents); a document without a run of two digits before any detector ran is
    left to the e-mail detector alone, as in :func:`redact`. ``Detector.needs`` is not consulted:
    it only skips texts that hold no match its validator accepts, so it changes no result.

    The documents are never split into Python lines: their lines are found in Arrow's buffer
    (:class:`_LineTable`), only the flagged lines become Python strings, and a document that
    changed is its text with the changed lines spliced in, once, at the end.
    """
    out, counts = list(texts), [dict.fromkeys(PII_KINDS, 0) for _ in texts]
    names = _enabled(kinds)
    if not names:
        return out, counts
    docs = np.flatnonzero(_mask(arr, any_candidate(names)))
    if not len(docs):
        return out, counts
    table = _LineTable(arr, docs)
    masks = _masks_of_hits(table.lines, names)
    flagged = {name: table.by_document(np.flatnonzero(mask)) for name, mask in masks.items()}
    read = np.flatnonzero(np.logical_or.reduce(list(masks.values())))
    lines = dict(zip(read.tolist(), table.text_of(read), strict=True))  # line id -> its text now
    originals = [texts[i] for i in docs.tolist()]
    changed: list[set[int]] = [set() for _ in originals]
    found = [dict.fromkeys(PII_KINDS, 0) for _ in originals]
    digits: dict[int, bool] = {}
    inert = tokens_inert(
        tuple((det.name, placeholder.format(kind=det.kind.upper())) for det in DETECTORS if det.kind in kinds)
    )
    for det in DETECTORS:
        if det.kind not in kinds:
            continue
        token = placeholder.format(kind=det.kind.upper())
        todo = flagged[det.name] if inert else _rechecked(det.name, flagged[det.name], changed, lines)
        for n, ids in todo.items():
            if det.kind != "email":
                if n not in digits:
                    digits[n] = _HAS_DIGIT_RUN.search(originals[n]) is not None
                if not digits[n]:
                    continue
            _redact_detector(det, token, lines, ids, changed[n], found[n])
    at = docs.tolist()
    for n, text in table.splice(originals, changed, lines).items():
        out[at[n]] = text
    for n, i in enumerate(at):
        counts[i] = found[n]
    return out, counts


_BLOCK = 1 << 22  # bytes searched for line breaks at a time: small temporaries, no fresh pages


class _LineTable:
    """The lines of some documents of a batch, located in the batch's Arrow buffer without copying
    it. Entry ids run over the chosen documents in order (a document's lines are consecutive);
    each line is cut at "\\n" as ``str.split("\\n")`` cuts it (a document ending in "\\n" has an
    empty last line); the bytes between two chosen documents that are not adjacent are one null
    entry, which no scan reads and no document owns."""

    def __init__(self, batch: pa.Array | pa.ChunkedArray, docs: np.ndarray) -> None:
        if not len(docs):
            raise ValueError("a line table needs at least one document")
        if isinstance(batch, pa.ChunkedArray):
            batch = batch.combine_chunks()
        if not pa.types.is_large_string(batch.type):
            batch = batch.cast(pa.large_string())
        if batch.null_count:
            raise ValueError("redact_batch: a document is null")
        _, offsets, data = batch.buffers()
        if data is None:  # every document empty
            data = pa.py_buffer(b"")
        every = np.frombuffer(offsets, np.int64)[batch.offset : batch.offset + len(batch) + 1]
        self.begin, self.end = every[docs], every[docs + 1]
        self.data = np.frombuffer(data, np.uint8)
        adjacent = self.begin[1:] == self.end[:-1]
        runs = np.flatnonzero(~adjacent) + 1  # the chosen documents that open a run of adjacent ones
        firsts, lasts = np.append(0, runs), np.append(runs - 1, len(docs) - 1)
        found = [
            np.flatnonzero(self.data[at : min(at + _BLOCK, stop)] == 10) + at  # UTF-8: a 10 is a "\n"
            for start, stop in zip(self.begin[firsts].tolist(), self.end[lasts].tolist(), strict=True)
            for at in range(start, stop, _BLOCK)
        ]
        breaks = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
        before = np.searchsorted(breaks, self.begin)  # line breaks before each document
        gap = np.append(~adjacent, False)  # a null entry after the document
        sizes = 1 + np.append(before[1:], len(breaks)) - before + gap
        total = int(sizes.sum())
        #: each document's first entry id, and the number of entries after the last
        self.first = np.append(0, np.cumsum(sizes))
        starts = np.empty(total + 1, dtype=np.int64)
        starts[self.first[:-1]] = self.begin
        kind = np.zeros(total + 1, dtype=np.int8)  # 0: a document's first line, 1: after a break, 2: gap
        owner = np.searchsorted(self.begin, breaks, side="right") - 1
        after = self.first[owner] + 1 + np.arange(len(breaks)) - before[owner]
        starts[after] = breaks + 1
        kind[after] = 1
        gaps = self.first[1:][gap] - 1
        starts[gaps] = self.end[gap]
        kind[gaps] = 2
        starts[total] = self.end[-1]
        self.starts = starts[:-1]
        self.closed = kind[1:] == 1  # the lines that end with a "\n" (not their document's last)
        self.ends = starts[1:] - self.closed
        valid = kind[:-1] != 2
        #: every line with its "\n" (no candidate pattern matches one, nor has anchors or lookarounds)
        self.lines = pa.LargeStringArray.from_buffers(
            total,
            pa.py_buffer(starts),
            data,
            pa.py_buffer(np.packbits(valid, bitorder="little")),
            int(gap.sum()),
        )

    def by_document(self, ids: np.ndarray) -> dict[int, list[int]]:
        """Line ids (ascending) grouped by document (by its place among the chosen ones)."""
        if not len(ids):
            return {}
        doc = np.searchsorted(self.first, ids, side="right") - 1
        cuts = np.flatnonzero(np.diff(doc)) + 1
        begin, end = np.append(0, cuts).tolist(), np.append(cuts, len(ids)).tolist()
        at = ids.tolist()
        return {n: at[a:b] for n, a, b in zip(doc[begin].tolist(), begin, end, strict=True)}

    def text_of(self, ids: np.ndarray) -> list[str]:
        """The lines ``ids`` as Python strings, without their "\\n"."""
        return pc.replace_substring(self.lines.take(pa.array(ids, pa.int64())), "\n", "").to_pylist()

    def splice(self, texts: list[str], changed: list[set[int]], lines: dict[int, str]) -> dict[int, str]:
        """Each chosen document (by its place among them) where ``changed`` holds line ids: its text as it
        came in (``texts``) with those lines replaced by ``lines``. In a document that is not
        ASCII, the lines' byte offsets become code points by the number of UTF-8 continuation
        bytes before them. (Joining the lines in Arrow instead was slower: it copies every line.)"""
        out = {}
        for n, ids in enumerate(changed):
            if not ids:
                continue
            at = np.array(sorted(ids), dtype=np.int64)
            begin, end = self.begin[n], self.end[n]
            starts, ends = self.starts[at] - begin, self.ends[at] - begin
            if len(texts[n]) != end - begin:  # not ASCII
                tail = np.flatnonzero((self.data[begin:end] & 0xC0) == 0x80)
                starts, ends = starts - np.searchsorted(tail, starts), ends - np.searchsorted(tail, ends)
            text, pieces, last = texts[n], [], 0
            for j, a, b in zip(at.tolist(), starts.tolist(), ends.tolist(), strict=True):
                pieces += (text[last:a], lines[j])
                last = b
            pieces.append(text[last:])
            out[n] = "".join(pieces)
        return out


def _rechecked(
    name: str, flagged: dict[int, list[int]], changed: list[set[int]], lines: dict[int, str]
) -> dict[int, list[int]]:
    """Per document, the lines (ascending) the detector ``name`` must read: those flagged for it,
    and those an earlier detector changed where its candidate matches what the line holds now."""
    todo = {n: set(ids) for n, ids in flagged.items()}
    extra = [(n, j) for n, done in enumerate(changed) for j in done if j not in todo.get(n, ())]
    if extra:
        try:
            hits = _mask(pa.array([lines[j] for _, j in extra], pa.large_string()), candidates()[name])
        except (UnicodeEncodeError, pa.ArrowInvalid):  # a placeholder Arrow cannot hold: read them all
            hits = np.ones(len(extra), dtype=bool)
        for (n, j), hit in zip(extra, hits.tolist(), strict=True):
            if hit:
                todo.setdefault(n, set()).add(j)
    return {n: sorted(ids) for n, ids in sorted(todo.items())}


def _redact_detector(
    det: Detector,
    token: str,
    lines: dict[int, str],
    todo: list[int],
    changed: set[int],
    counts: dict[str, int],
) -> bool:
    """One detector over the lines ``todo`` (ascending ids) of one document; marks the lines it
    changed (or, where it changed any, read: see :func:`_sub_lines`). True if any changed."""
    _replace = _replacer(det, token, counts)
    if "\n" in token:  # a replacement that breaks lines: one line at a time
        touched = False
        for j in todo:
            new = det.pattern.sub(_replace, lines[j])
            if new != lines[j]:
                lines[j], touched = new, True
                changed.add(j)
        return touched
    if det.valid is accept_all:  # every match is replaced: no callback per match
        literal = token.replace("\\", "\\\\")  # a template with no escapes or group references
        return _sub_lines(det.pattern, literal, lines, todo, changed, counts, det.kind)
    return _sub_lines(det.pattern, _replace, lines, todo, changed)


def _sub_lines(
    pattern: re.Pattern,
    replace,
    lines: dict[int, str],
    todo: list[int],
    changed: set[int],
    counts: dict[str, int] | None = None,
    kind: str = "",
) -> bool:
    """``pattern.sub(replace, ...)`` on each of ``lines[j]`` for ``j`` in ``todo`` (ascending), in one
    call over those lines joined by newlines: no detector matches a newline or sees past one (see
    :func:`redact_batch`), so each line gets the same matches, in the same order, as alone; the
    replacement holds no newline, so the result splits back into the same lines. Where any line
    changed, stores and marks every line of ``todo`` (splicing an unchanged line back is a no-op,
    and a later detector at worst rechecks it); True if any changed. With ``counts``, ``replace``
    is a literal string and every match is counted under ``kind`` (what the callback of an
    always-valid detector would do)."""
    if not todo:
        return False
    chunk = "\n".join([lines[j] for j in todo])
    if counts is None:
        new = pattern.sub(replace, chunk)
    else:
        new, n = pattern.subn(replace, chunk)
        counts[kind] += n
    if new == chunk:
        return False
    lines.update(zip(todo, new.split("\n"), strict=True))
    changed.update(todo)
    return True
