"""ftfy, called only where it can change something: a conservative pre-check, proved from ftfy's own tables.

``ftfy.fix_text`` with its default configuration (the one the cleaning stage uses) cuts a document
into segments at line breaks (and every ``max_decode_length`` code points) and runs
``fix_and_explain`` on each. That function loops until nothing changes; one pass applies, in order,
``unescape_html`` (only while no segment so far held a ``<``), ``fix_encoding`` (which includes
``restore_byte_a0``, ``replace_lossy_sequences``, ``decode_inconsistent_utf8`` and
``fix_c1_controls`` on the encoding path), ``fix_c1_controls``, ``fix_latin_ligatures``,
``fix_character_width``, ``uncurl_quotes``, ``fix_line_breaks``, ``fix_surrogates``,
``remove_terminal_escapes``, ``remove_control_chars`` and NFC. Every one of them acts only where a
known code point occurs (the sets below are read from ftfy at import, not copied):

- ``unescape_html`` substitutes matches of ``HTML_ENTITY_RE`` (``&#?[0-9A-Za-z]{1,24};``) only;
- ``fix_encoding`` returns its input unless the text is not ASCII *and* ``is_bad`` (a search of
  ``BADNESS_RE``) matches; every alternative of ``BADNESS_RE`` contains an element that only matches
  non-ASCII characters, all of which are in :data:`BADNESS_CHARS` (checked at import by
  :func:`_badness_chars`, which raises if ftfy's pattern ever stops having that property), so
  without such a character the badness search cannot match;
- ``fix_c1_controls``: U+0080–U+009F; ``fix_latin_ligatures`` / ``fix_character_width`` /
  ``remove_control_chars``: the keys of ``LIGATURES`` / ``WIDTH_MAP`` / ``CONTROL_CHARS``
  (``str.translate`` tables); ``uncurl_quotes``: ``SINGLE_QUOTE_RE`` and ``DOUBLE_QUOTE_RE``'s
  classes; ``fix_line_breaks``: ``\\r``, U+2028, U+2029, U+0085; ``fix_surrogates``: U+D800–U+DFFF;
  ``remove_terminal_escapes``: ``ANSI_RE``, which starts with ``\\x1b``;
- NFC changes only text that is not NFC-normalized.

**Skip.** Let T be the union of those code points plus the entity pattern (:data:`TRIGGER_RE2`). If a
document has no match of T, is NFC-normalized and is shorter than ``max_decode_length``, then every
fixer leaves every segment unchanged on the first pass (a segment is a substring cut after a
``\\n``, which never composes under NFC, so it is normalized too), the loop stops, and ftfy returns
the document unchanged. So the document is skipped, and the result equals ftfy's.

**Substitute.** If T matches only characters whose fixers are plain substitutions (ligatures,
widths, quotes) or that only feed the badness heuristic (no entity, C1 or control character, line
break, surrogate or escape), then where the badness search finds nothing in the document, no
segment is bad (the document-level search uses ``re.MULTILINE`` so ``^`` still matches at every
segment start; a match inside a segment is a match inside the document), so pass one is exactly
``NFC(uncurl(width(ligatures(segment))))`` per segment, which for the whole document is the same
substitution on the document (all of them act character by character and never touch ``\\n``). If
that result again has no badness match, no entity, and no character any fixer acts on apart from
badness-only ones, pass two changes nothing and ftfy returns it. Both conditions are checked.

**Unchanged.** A document the substitution path would take that holds no character it substitutes
and is NFC-normalized is left as it is: the path would return it unchanged (:func:`fix_texts`).

**Otherwise** each segment is fixed by ``fix_and_explain`` itself where it needs it (T matches or
it is not normalized), with ftfy's own rule for turning HTML unescaping off after the first ``<``.

The badness search runs as a superset in RE2 over the whole batch (``\\s`` and ``\\w`` widened to
classes that contain all of Python's), so it may send a document to the slow path needlessly, never
the other way. ``tests/unit/test_ftfy_gate.py`` checks equality with ``ftfy.fix_text`` on every
document of a real-text fixture and on crafted cases.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

import ftfy
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ftfy import chardata, fixes
from ftfy.badness import BADNESS_RE

try:  # the regex parser behind `re` (public as sre_parse before 3.11)
    import re._parser as sre_parse
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore[no-redef]

FTFY_CONFIG = ftfy.TextFixerConfig(explain=False)  # ftfy's defaults (NFC), without explanations
_NO_HTML = FTFY_CONFIG._replace(unescape_html=False)


def _class_chars(items) -> set[int] | None:
    """Code points a parsed regex element can match, or None if it can match ASCII or is not a
    single-character element."""
    chars: set[int] = set()
    for op, av in items:
        if op is sre_parse.LITERAL:
            chars.add(av)
        elif op is sre_parse.RANGE:
            chars.update(range(av[0], av[1] + 1))
        else:  # NEGATE, CATEGORY: may match ASCII
            return None
    return chars


def _element_chars(op, av) -> set[int] | None:
    if op is sre_parse.LITERAL:
        return {av}
    if op is sre_parse.IN:
        return _class_chars(av)
    return None


def _badness_chars() -> set[int]:
    """Every non-ASCII code point in BADNESS_RE, after checking that each alternative needs one."""
    parsed = sre_parse.parse(BADNESS_RE.pattern, BADNESS_RE.flags)
    top = parsed.data
    branches = top[0][1][1] if len(top) == 1 and top[0][0] is sre_parse.BRANCH else [parsed]
    found: set[int] = set()
    for branch in branches:
        required = False
        for op, av in branch.data:
            chars = _element_chars(op, av)
            if chars is not None and min(chars) >= 0x80:
                required = True
            if chars is not None:
                found.update(c for c in chars if c >= 0x80)
        if not required:
            raise RuntimeError("ftfy's BADNESS_RE has an alternative without a non-ASCII element")
    return found


def regex_class_chars(pattern: re.Pattern) -> set[int]:
    """The code points of a pattern that is one character class (or literal)."""
    parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    chars = set()
    for op, av in parsed.data:
        got = _element_chars(op, av)
        if got is None:
            raise RuntimeError(f"unexpected element in {pattern.pattern!r}")
        chars |= got
    return chars


BADNESS_CHARS = frozenset(_badness_chars())
QUOTE_CHARS = frozenset(
    regex_class_chars(chardata.SINGLE_QUOTE_RE) | regex_class_chars(chardata.DOUBLE_QUOTE_RE)
)
SUBSTITUTED = frozenset(set(chardata.LIGATURES) | set(chardata.WIDTH_MAP) | QUOTE_CHARS)
if not fixes.ANSI_RE.pattern.startswith("\x1b"):
    raise RuntimeError("ftfy's ANSI_RE no longer starts with ESC")
HARD = frozenset(
    set(range(0x80, 0xA0))
    | set(chardata.CONTROL_CHARS)
    | {0x0D, 0x2028, 0x2029, 0x85, 0x1B}
    | set(range(0xD800, 0xE000))
)
TRIGGER = frozenset(BADNESS_CHARS | SUBSTITUTED | HARD)
ENTITY = chardata.HTML_ENTITY_RE.pattern  # ASCII only: the same in RE2


def every_code_point(limit: int = 0x110000) -> str:
    """All code points below ``limit`` but the surrogates, in order, as one string (built by numpy in
    milliseconds: one ``chr`` per code point would take most of a second)."""
    cps = np.arange(limit, dtype=np.uint32)
    return cps[(cps < 0xD800) | (cps >= 0xE000)].tobytes().decode("utf-32-le")


def re2_class(codepoints: Iterable[int]) -> str:
    """A character class for RE2 (surrogates left out: they cannot occur in UTF-8)."""
    cps = sorted(c for c in set(codepoints) if not 0xD800 <= c < 0xE000)
    parts, i = [], 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        parts.append(rf"\x{{{cps[i]:x}}}" + (rf"-\x{{{cps[j]:x}}}" if j > i else ""))
        i = j + 1
    return "[" + "".join(parts) + "]"


def py_class(codepoints: Iterable[int]) -> str:
    cps = sorted(set(codepoints))
    return "[" + "".join(re.escape(chr(c)) for c in cps) + "]"


TRIGGER_RE2 = f"{re2_class(TRIGGER)}|{ENTITY}"
NOT_SIMPLE_RE2 = f"{re2_class(HARD)}|{ENTITY}"  # what rules out the substitution path
AFTER_RE2 = f"{re2_class(HARD | SUBSTITUTED)}|{ENTITY}"  # what pass two must not find
_LIGATURES_RE2 = re2_class(chardata.LIGATURES)
_WIDTH_RE2 = re2_class(chardata.WIDTH_MAP)
_DOUBLE_RE2 = re2_class(regex_class_chars(chardata.DOUBLE_QUOTE_RE))
_SINGLE_RE2 = re2_class(regex_class_chars(chardata.SINGLE_QUOTE_RE))
_TRIGGER_PY = re.compile(f"{py_class(TRIGGER)}|{ENTITY}")
# What a fixer other than the encoding's acts on.
_ACTS_PY = re.compile(f"{py_class(HARD | SUBSTITUTED)}|{ENTITY}")
# Python's whitespace (str.isspace, and `\s` in str patterns): every such code point is below U+3001.
PY_WHITESPACE = tuple(c for c in range(0x3001) if chr(c).isspace())


def _badness_re2() -> str:
    r"""BADNESS_RE as RE2: verbose whitespace and comments dropped, ``^`` per line, ``\s`` and
    ``\w`` replaced by classes at least as wide as Python's."""
    src, out, i, in_class = BADNESS_RE.pattern, [], 0, False
    space = re2_class(PY_WHITESPACE)[1:-1]
    word = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # everything but ASCII non-word characters
    while i < len(src):
        ch = src[i]
        if ch == "\\" and i + 1 < len(src):
            esc = src[i + 1]
            if esc == "s":
                out.append(space if in_class else f"[{space}]")
            elif esc == "w":
                if in_class:
                    raise RuntimeError("\\w inside a class in BADNESS_RE")
                out.append(word)
            else:
                out.append(src[i : i + 2])
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
            out.append(rf"\x{{{ord(ch):x}}}" if ord(ch) >= 0x80 or ch in " \t\n" else ch)
        elif ch == "[":
            in_class = True
            out.append(ch)
            if src[i + 1 : i + 2] == "^":
                out.append("^")
                i += 1
        elif ch == "#":
            i = src.find("\n", i)
            if i < 0:
                break
            continue
        elif ch.isspace():
            pass
        else:
            out.append(rf"\x{{{ord(ch):x}}}" if ord(ch) >= 0x80 else ch)
        i += 1
    return "(?m)" + "".join(out)


BADNESS_RE2 = _badness_re2()

_LIGATURE_OR_WIDTH_RE2 = f"{_LIGATURES_RE2}|{_WIDTH_RE2}"


def _either(first: str, second: str) -> str:
    """One RE2 pattern matching where ``first`` (BADNESS_RE2, whose ``(?m)`` it keeps) or
    ``second`` (no ``^`` or ``$``, so the flag leaves it as it is) matches: one scan, not two."""
    if not first.startswith("(?m)") or "^" in second or "$" in second:
        raise RuntimeError("cannot join these patterns under one (?m)")
    return f"(?m)(?:{first[4:]})|(?:{second})"


_NOT_SUBSTITUTABLE_RE2 = _either(BADNESS_RE2, NOT_SIMPLE_RE2)  # bad, or something hard
_SUBSTITUTED_RE2 = re2_class(SUBSTITUTED)  # what the substitution path replaces
_RULED_OUT_OR_SUBSTITUTED_RE2 = _either(BADNESS_RE2, f"{NOT_SIMPLE_RE2}|{_SUBSTITUTED_RE2}")
_BLOCKED_RE2 = _either(BADNESS_RE2, AFTER_RE2)  # what pass two must not find


def _mask(arr: pa.Array, pattern: str) -> list[bool]:
    return pc.match_substring_regex(arr, pattern).to_pylist()


def _translator(table: dict[int, str | int | None]):
    """``str.translate(table)`` as a substitution of the table's characters only, with the same
    result (each character the table maps is replaced by its entry, nothing else is touched):
    ``translate`` looks every character up in the table, slow on long non-ASCII texts (~50 ns a
    character), where the regex skips to the few characters the table maps."""
    entries = {
        chr(key): value if isinstance(value, str) else "" if value is None else chr(value)
        for key, value in table.items()
    }
    pattern = re.compile(py_class(table))
    return lambda text: pattern.sub(lambda match: entries[match.group()], text)


_LIGATURES = _translator(chardata.LIGATURES)  # fix_latin_ligatures
_WIDTH = _translator(chardata.WIDTH_MAP)  # fix_character_width


def _substituted(texts: list[str], positions: list[int]) -> dict[int, str]:
    """The substitution path: ``NFC(uncurl(width(ligatures(t))))`` for each text, kept only where
    pass two would change nothing (no badness, no entity, nothing left to substitute)."""
    arr = pa.array(texts, pa.large_string())
    mask = _mask(arr, _LIGATURE_OR_WIDTH_RE2)
    if any(mask):  # rare: one scan rules out both tables
        texts = [_WIDTH(_LIGATURES(t)) if m else t for t, m in zip(texts, mask, strict=True)]
        arr = pa.array(texts, pa.large_string())
    arr = pc.replace_substring_regex(arr, _DOUBLE_RE2, '"')  # uncurl_quotes, in its order
    arr = pc.replace_substring_regex(arr, _SINGLE_RE2, "'")
    fixed = [t if t.isascii() else unicodedata.normalize("NFC", t) for t in arr.to_pylist()]
    arr = pa.array(fixed, pa.large_string())
    blocked = _mask(arr, _BLOCKED_RE2)
    return {i: f for i, f, b in zip(positions, fixed, blocked, strict=True) if not b}


def fix_segments(text: str) -> str:
    """``ftfy.fix_text(text)``, with ``fix_and_explain`` called only on the segments that need it.

    A document shorter than ``max_decode_length`` is cut only after each ``\n``, and when it is
    NFC-normalized so is every such segment (see the module docstring). Then a segment needs ftfy
    iff a match of :data:`_TRIGGER_PY` lies in it (no match spans a ``\n``: the pattern is single
    characters, none of them ``\n``, or an entity without one), so the trigger matches of the whole
    document are found in one scan and the lines between them are copied in one slice each,
    instead of a Python iteration per line (a man page has thousands). A segment is fixed with
    HTML unescaping off from the first segment holding a ``<`` on, as :func:`_fix_each_segment`
    does (ftfy's own rule). A trigger's segment whose only triggers are badness-only characters
    (no entity, nothing a fixer substitutes or removes) and where ftfy's own badness search
    (``is_bad``) finds nothing is left as it is: ``fix_and_explain`` would return it unchanged
    (``fix_encoding`` returns a text that is not bad, every other fixer finds none of its
    characters, and the segment is NFC)."""
    config = FTFY_CONFIG
    if len(text) >= config.max_decode_length or not unicodedata.is_normalized("NFC", text):
        return _fix_each_segment(text)
    first_lt = text.find("<") if config.unescape_html == "auto" else -1
    out, pos = [], 0
    for match in _TRIGGER_PY.finditer(text):
        at = match.start()
        if at < pos:  # in a segment already fixed
            continue
        start = text.rfind("\n", 0, at) + 1
        end = text.find("\n", at) + 1 or len(text)
        out.append(text[pos:start])
        segment = text[start:end]
        if _ACTS_PY.search(segment) is not None or BADNESS_RE.search(segment) is not None:
            segment_config = _NO_HTML if 0 <= first_lt < end else config
            segment = ftfy.fix_and_explain(segment, segment_config)[0]
        out.append(segment)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _fix_each_segment(text: str) -> str:
    """:func:`fix_segments` one segment at a time (ftfy's own loop, any length and normal form)."""
    out, pos, config = [], 0, FTFY_CONFIG
    limit = config.max_decode_length
    while pos < len(text):
        brk = text.find("\n", pos) + 1 or len(text)
        brk = min(brk, pos + limit)
        segment = text[pos:brk]
        if config.unescape_html == "auto" and "<" in segment:
            config = _NO_HTML
        if _TRIGGER_PY.search(segment) or not unicodedata.is_normalized("NFC", segment):
            segment = ftfy.fix_and_explain(segment, config)[0]
        out.append(segment)
        pos = brk
    return "".join(out)


def fix_text_one(text: str) -> str:
    """ftfy.fix_text for one document, through the same gate as :func:`fix_texts`."""
    return fix_texts([text])[0]


def fix_texts(texts: Sequence[str], arr: pa.Array | None = None) -> list[str]:
    """``[ftfy.fix_text(t) for t in texts]``, computed where it can differ from the input only.
    ``arr``: the same strings as an Arrow array, when the caller has them (not converted again).

    A document the substitution path would take (see the module docstring) that holds none of the
    characters it substitutes and is NFC-normalized comes out of that path as it went in: every
    substitution and NFC leave it, and pass two's check (badness, hard characters, entities,
    substituted characters) finds nothing the first check did not already rule out. Such documents
    (on real text, most of those with a non-ASCII character: an accent, a dash, a bullet) are
    returned as they are, the very objects, without the path's conversions and scans."""
    out = list(texts)
    if arr is None:
        try:
            arr = pa.array(out, pa.large_string())
        except (UnicodeEncodeError, pa.ArrowInvalid):  # lone surrogates: ftfy replaces them
            return [fix_segments(t) for t in out]
    flagged = _mask(arr, TRIGGER_RE2)
    limit = FTFY_CONFIG.max_decode_length
    todo = [i for i, (t, f) in enumerate(zip(out, flagged, strict=True)) if f or not _nfc_and_short(t, limit)]
    if not todo:
        return out
    ruled_out, substitutes = _second_level(arr.take(pa.array(todo, pa.int64())))
    candidates, unchanged = [], set()
    for k, i in enumerate(todo):
        if ruled_out[k] or len(out[i]) >= limit:
            continue
        if substitutes[k] or not _nfc(out[i]):
            candidates.append(k)
        else:  # only badness-only characters, and the badness search finds nothing: see below
            unchanged.add(i)
    done: dict[int, str] = {}
    if candidates:
        done = _substituted([out[todo[k]] for k in candidates], [todo[k] for k in candidates])
    for i in todo:
        if i not in unchanged:
            out[i] = done[i] if i in done else fix_segments(out[i])
    return out


def _second_level(sub: pa.Array) -> tuple[list[bool], list[bool]]:
    """Per string of ``sub``: (is the substitution path ruled out, does it hold a character that
    path substitutes). One scan for either answer first: on real text most flagged documents hold
    neither (only badness-only characters: a dash, a bullet, an accent), so the two patterns then
    scan only the few that hold one, instead of every flagged document each."""
    either = _mask(sub, _RULED_OUT_OR_SUBSTITUTED_RE2)
    hits = [k for k, hit in enumerate(either) if hit]
    ruled_out, substitutes = [False] * len(sub), [False] * len(sub)
    if hits:
        found = sub.take(pa.array(hits, pa.int64()))
        for k, r, t in zip(
            hits, _mask(found, _NOT_SUBSTITUTABLE_RE2), _mask(found, _SUBSTITUTED_RE2), strict=True
        ):
            ruled_out[k], substitutes[k] = r, t
    return ruled_out, substitutes


def _nfc(text: str) -> bool:
    return text.isascii() or unicodedata.is_normalized("NFC", text)


def _nfc_and_short(text: str, limit: int) -> bool:
    return len(text) < limit and _nfc(text)
