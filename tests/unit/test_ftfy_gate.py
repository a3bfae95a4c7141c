"""The ftfy pre-check: the gated repair equals ftfy.fix_text on every document, real and crafted."""

import ftfy
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from ftfy.badness import BADNESS_RE

from refinery.clean import ftfy_gate
from refinery.clean.normalize import fix_unicode, fix_unicode_batch
from tests.unit.real_text import real_documents

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # typing.io's docstring

CRAFTED = [
    "The cafÃ© serves â€œspecialâ€\x9d coffee.",  # mojibake, sloppy windows-1252
    "Ã  la carte",  # restore_byte_a0 territory; 'Ã ' at a line start (the ^ branch of BADNESS_RE)
    "first line\nÃ  la ligne suivante",
    "voilÃ le travail",
    "\u201cCurly\u201d and \u2018single\u2019 quotes, \u201aLow\u201b and \u02bcmodifier",
    "ﬁnancial ﬂow, ﬀ ﬃ ﬄ ﬅ ﬆ, Ĳssel ĳs, ǅemal ŉ",  # ligatures; ŉ becomes ʼn, then uncurled
    "ＬＯＵＤ　ＮＯＩＳＥＳ and ｶﾀｶﾅ ＆ａｍｐ；",  # width; the fullwidth entity becomes &amp; in pass one
    "Tom &amp; Jerry &eacute; &EACUTE; &#x2019; &#8217; &lt;tag&gt;",
    "<p>no unescape here &amp;</p>\nnor here &amp; after the tag line",
    "unescaped &amp; first\n<b>then a tag</b>\nthen &amp; not",
    "ansi \x1b[31mred\x1b[0m text",
    "CRLF\r\nline\rold mac\u2028sep\u2029para\x85nel",
    "controls \x00\x01\x07\x0b\x0e\x1f\x7f bom\ufeff annotation\ufff9x\ufffb and \u206a",
    "c1 \x80\x81\x9f controls",
    "e\u0301 combining, A\u030a, Å (angstrom sign), ﬁ\u0301",
    "\u00a0nbsp \u00ad soft \u2013 en \u2014 em \u2026 … · • ¶ § ½ × ² ³ ©",
    "Âµ Â° Â· Ã© Ã¨ Ã¼ Ã¶ Ã¤ Ã± â€™ â€” â€“ â€¦",
    "Ð¿Ñ€Ð¸Ð²ÐµÑ‚ Ð¼Ð¸Ñ€",  # Cyrillic mojibake
    "Привет мир, Ελληνικά, 日本語のテキスト, 한국어, עברית, العربية",
    "emoji 👩\u200d💻 🖕 𝒥ohn ℋancock",
    "ordinary ASCII text with no trouble at all.",
    "",
    "\n\n\n",
    "line one\nline two\n",
    "x" * 5000 + "’" + "y" * 5000,
]


@pytest.fixture(scope="module")
def documents():
    return list(real_documents()) + CRAFTED


def test_gated_repair_equals_ftfy_on_every_document(documents):
    expected = [ftfy.fix_text(t) for t in documents]
    assert fix_unicode_batch(documents) == expected
    changed = sum(a != b for a, b in zip(documents, expected, strict=True))
    assert changed >= len(CRAFTED) - 8  # the fixture really exercises ftfy


def test_repaired_output_is_nfc(documents):
    """What cleaning relies on to leave NFC out after the repair (normalize_forms): every repaired
    text shorter than ftfy's max_decode_length is NFC, also from decomposed (NFD) input."""
    import unicodedata

    inputs = documents + [unicodedata.normalize("NFD", t) for t in documents]
    decomposed = sum(not unicodedata.is_normalized("NFC", t) for t in inputs)
    assert decomposed >= 40  # the fixture really holds text NFC changes (59 texts)
    for text in fix_unicode_batch(inputs):
        assert unicodedata.is_normalized("NFC", text)


@pytest.mark.parametrize("text", CRAFTED)
def test_one_document_equals_ftfy(text):
    assert fix_unicode(text) == ftfy.fix_text(text)


def test_segments_path_equals_ftfy(documents):
    for text in documents[::7] + CRAFTED:
        assert ftfy_gate.fix_segments(text) == ftfy.fix_text(text), text[:60]


def test_lone_surrogates_fall_back_and_still_equal_ftfy():
    texts = ["bad \ud800 surrogate", "fine text", "pair \ud83d\ude00 joined"]
    assert fix_unicode_batch(texts) == [ftfy.fix_text(t) for t in texts]


def test_badness_pre_check_is_a_superset_of_ftfys(documents):
    """Wherever ftfy's own is_bad fires on a segment, the RE2 document-level check fires too."""
    arr = pa.array(documents)
    flagged = pc.match_substring_regex(arr, ftfy_gate.BADNESS_RE2).to_pylist()
    for text, hit in zip(documents, flagged, strict=True):
        if any(BADNESS_RE.search(seg) for seg in text.splitlines(keepends=True)):
            assert hit, text[:60]


def test_skipped_documents_hold_no_code_point_ftfy_acts_on(documents):
    arr = pa.array(documents)
    flagged = pc.match_substring_regex(arr, ftfy_gate.TRIGGER_RE2).to_pylist()
    for text, hit in zip(documents, flagged, strict=True):
        if not hit:
            assert not any(ord(c) in ftfy_gate.TRIGGER for c in text)
            assert not ftfy.chardata.HTML_ENTITY_RE.search(text)


def test_trigger_set_covers_ftfys_tables():
    for table in (ftfy.chardata.LIGATURES, ftfy.chardata.WIDTH_MAP, ftfy.chardata.CONTROL_CHARS):
        assert set(table) <= ftfy_gate.TRIGGER
    assert {0x0D, 0x1B, 0x2028, 0x2029, *range(0x80, 0xA0)} <= ftfy_gate.TRIGGER
    assert ord("’") in ftfy_gate.TRIGGER and ord("é") in ftfy_gate.BADNESS_CHARS


# Documents with only badness-only characters (accents, dashes, bullets: ftfy's heuristic looks at
# them, no fixer replaces them), each beside a variant that must NOT take the unchanged shortcut:
# a character the substitution path replaces, a text that is not NFC, real mojibake, an entity, a
# control character, a document over ftfy's segment length.
BADNESS_ONLY = ["café – naïve résumé… • ½ × ©", "Größe · 20 °C\nzweite Zeile — ñ", "\u00a0nbsp\u00adsoft"]
MUST_NOT_SKIP = [
    "café – naïve “quoted” résumé",  # curly quotes: uncurled
    "café – ﬁnancial",  # ligature
    "café – ＦＵＬＬ",  # width
    "cafe\u0301 – not NFC",  # NFC composes it
    "caf\u00c3\u00a9 – mojibake",  # badness: fix_encoding
    "café – Tom &amp; Jerry",  # entity
    "café – control\x1b[1m",  # escape
    "café – \x85 C1",  # C1 control
    "é" + "x" * 1_000_000,  # longer than max_decode_length: per segment
]


def test_badness_only_documents_are_returned_as_they_are():
    """The shortcut: the very objects come back (no conversion), and they equal ftfy's output."""
    texts = BADNESS_ONLY + MUST_NOT_SKIP
    out = ftfy_gate.fix_texts(texts)
    assert out == [ftfy.fix_text(t) for t in texts]
    assert all(a is b for a, b in zip(out[: len(BADNESS_ONLY)], BADNESS_ONLY, strict=True))
    for before, after in zip(MUST_NOT_SKIP[:-1], out[len(BADNESS_ONLY) : -1], strict=True):
        assert after != before, before  # each of these really is changed by ftfy


@pytest.mark.parametrize("text", MUST_NOT_SKIP[:-1])
def test_each_must_not_skip_case_alone_and_among_badness_only(text):
    texts = [BADNESS_ONLY[0], text, BADNESS_ONLY[1]]
    assert ftfy_gate.fix_texts(texts) == [ftfy.fix_text(t) for t in texts]


SEGMENTS = [
    "café – a line ftfy leaves alone\n",  # badness-only characters, not bad: skipped
    "The cafÃ© mojibake line\n",  # bad: fixed
    "plain ASCII line\n",
    "\x85 a C1 control\n",  # hard: fixed
    "naïve “quoted” — line\n",  # a quote to uncurl: fixed
    "Tom &amp; Jerry – entity\n",  # entity: fixed
    "Ã  la carte\n",  # bad at the line start (the ^ branch)
    "résumé — last line without a break",
]


def test_segments_with_only_badness_only_characters_skip_ftfy(monkeypatch):
    """In a document that takes the segment path, ftfy runs only on the segments it can change;
    the document still equals ftfy.fix_text whatever the order of its lines."""
    calls = []
    real = ftfy.fix_and_explain
    monkeypatch.setattr(
        ftfy, "fix_and_explain", lambda text, config: calls.append(text) or real(text, config)
    )
    for shift in range(len(SEGMENTS)):
        lines = SEGMENTS[shift:] + SEGMENTS[:shift]
        text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
        calls.clear()
        got = ftfy_gate.fix_segments(text)
        fixed = sorted(calls)
        assert got == ftfy.fix_text(text)
        assert fixed == sorted(
            line if line.endswith("\n") else line + "\n"
            for line in lines
            if line.startswith(("The ", "\x85", "naïve", "Tom ", "Ã  l"))
        )


def test_table_substitutions_equal_str_translate(documents):
    """The ligature and width substitutions equal ftfy's str.translate on every code point and on
    every document."""
    every = ftfy_gate.every_code_point()
    for table, substitute in (
        (ftfy.chardata.LIGATURES, ftfy_gate._LIGATURES),
        (ftfy.chardata.WIDTH_MAP, ftfy_gate._WIDTH),
    ):
        assert substitute(every) == every.translate(table)
        for text in [*documents, *CRAFTED]:
            assert substitute(text) == text.translate(table)
