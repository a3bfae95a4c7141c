"""The batch redaction's line paths: detectors run over a document's flagged lines joined in one
call, e-mails replaced without a callback, and the IPv6 validator's shortcut, each equal to the
per-document reference (:func:`refinery.clean.pii.redact`) or to ``ipaddress`` itself."""

import ipaddress
import random

import numpy as np
import pyarrow as pa
import pytest

from refinery.clean.pii import (
    DETECTORS,
    PII_KINDS,
    _ipv6_ok,
    _LineTable,
    alphabet,
    redact,
    redact_batch,
    tokens_inert,
)
from tests.unit.real_text import real_documents
from tests.unit.test_clean_batch import PII_CASES

CHANGELOG = (
    "pkg (1.2-3) unstable; urgency=medium\n\n  * Fix bob@example.com's report (Closes: #123)\n\n"
    " -- Jane Doe <jane@example.org>  Mon, 12 Jan 2020 10:23:45 +0100\n"
    "served from fe80::1ff:fe23:4567:890a and 2001:db8:0:0:0:0:2:1 at 12:30:00 +44 20 7946 0958\n"
)


@pytest.fixture(scope="module")
def texts():
    return [*real_documents(), *PII_CASES, CHANGELOG, CHANGELOG * 3 + "\n".join(PII_CASES)]


@pytest.mark.parametrize(
    ("kinds", "placeholder"),
    [
        (PII_KINDS, "<{kind}>"),
        (("email", "ip"), r"\1\g<0>[{kind}]\\"),  # escapes and group references stay literal
        (PII_KINDS, "<\n{kind}\n>"),  # a placeholder that breaks lines: one line at a time
        (("phone", "credit_card"), "{kind} 555-123-4567"),  # the replacement is a later candidate
    ],
    ids=["default", "template-chars", "newline", "digits"],
)
def test_batch_equals_per_document(texts, kinds, placeholder):
    expected = [redact(t, set(kinds), placeholder) for t in texts]
    got = redact_batch(texts, pa.array(texts, pa.large_string()), set(kinds), placeholder)
    assert got[0] == [t for t, _ in expected]
    assert got[1] == [c for _, c in expected]
    assert any(sum(c.values()) for _, c in expected)


def _parses(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def test_ipv6_shortcut_agrees_with_ipaddress():
    rng = random.Random(3)
    alphabet = "0123456789abcdefABCDEF:::"
    cases = [
        "::1",
        "fe80::1",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:8:9",
        "10:23:45",
        ":1:2:3:4:5:6:7",
    ]
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randint(2, 40))) for _ in range(30_000)]
    for text in cases:
        colons = text.count(":")
        plain = colons >= 2 and len(text) - colons >= 2 and _parses(text)
        assert _ipv6_ok(text) == plain, text


@pytest.mark.parametrize(
    "placeholder",
    [
        "<{kind} 555-123-4567>",
        "{kind}@10.0.0.1",
        "<{kind} 4111 1111 1111 1111 fe80::1>",
        "\n{kind} 10.1.2.3\n",
    ],
)
def test_lines_changed_by_an_earlier_detector_are_read_by_the_later_ones(placeholder):
    """A line an e-mail replacement changed holds a phone, a card or an IP only after it: the batch
    path must recheck such lines with the later detectors' candidates, not only the lines their
    candidates flagged in the text as it came in."""
    texts = [
        "only mail: bob@example.com here",
        "no pii on this line\nmail jane@example.org\nand none here",
        CHANGELOG,
        "plain text",
    ]
    expected = [redact(t, set(PII_KINDS), placeholder) for t in texts]
    got = redact_batch(texts, pa.array(texts, pa.large_string()), set(PII_KINDS), placeholder)
    assert got == ([t for t, _ in expected], [c for _, c in expected])
    assert sum(c["email"] for _, c in expected) >= 3
    assert any(c[kind] for _, c in expected for kind in ("phone", "ip", "credit_card"))


def test_tokens_inert_only_where_no_replacement_can_make_a_later_match():
    def pairs(placeholder):
        return tuple((d.name, placeholder.format(kind=d.kind.upper())) for d in DETECTORS)

    assert tokens_inert(pairs("<{kind}>"))
    assert tokens_inert(pairs("[{kind}]"))
    # a replacement can let a later match start where a word character refused it before
    text = "card 4111 1111 1111 1111fe80::1 end"
    assert redact(text, set(PII_KINDS)) == (
        "card <CREDIT_CARD><IP> end",
        {**dict.fromkeys(PII_KINDS, 0), "credit_card": 1, "ip": 1},
    )
    assert redact_batch([text], pa.array([text]), set(PII_KINDS))[0] == ["card <CREDIT_CARD><IP> end"]
    for placeholder in (
        "",
        "{kind}",
        ":{kind}:",
        "<{kind}>1",
        "-{kind}-",
        "<{kind} 555-123-4567>",
        "<10.0.0.1>",
    ):
        assert not tokens_inert(pairs(placeholder)), placeholder
    assert alphabet("ipv6") == frozenset("0123456789abcdefABCDEF:")
    assert {"+", "(", ")", " ", ".", "-", "٣"} <= alphabet("phone")


@pytest.mark.parametrize(
    "placeholder",
    [
        "<{kind}>",
        "[{kind}]",
        "",
        "{kind}",
        ":{kind}:",
        "-{kind}-",
        ".{kind}.",
        "({kind})",
        "+{kind}",
        "<\ud800{kind}>",
    ],
)
def test_batch_equals_per_document_whether_or_not_tokens_are_inert(texts, placeholder):
    """Changed lines skip the recheck only when the tokens are inert; either way the batch path
    equals the per-document one."""
    sample = [*texts[::3], CHANGELOG, "a@b.cc:1234:: x@y.zz 555 123 4567 \n c@d.ee.1.2.3"]
    expected = [redact(t, set(PII_KINDS), placeholder) for t in sample]
    got = redact_batch(sample, pa.array(sample, pa.large_string()), set(PII_KINDS), placeholder)
    assert got == ([t for t, _ in expected], [c for _, c in expected])


GENERATED_PIECES = [
    *"abEf0159٣ -.:@+()\n_é",
    "::",
    "x@y.zz",
    "bob@example.com",
    "555-123-4567",
    "+44 20 7946 0958",
    "4111 1111 1111 1111",
    "10.0.0.1",
    "fe80::1",
    "1:2:3:4:5:6:7:8",
    "(555) 123-4567",
    "020 7946 0958",
    "std::vector",
    "12:30:45",
]


@pytest.mark.parametrize("placeholder", ["<{kind}>", "", ":{kind}:", "\n{kind}\n", "{kind}@1.2.3.4"])
@pytest.mark.parametrize("kinds", [PII_KINDS, ("ip", "phone"), ("email", "credit_card")])
def test_batch_equals_per_document_on_generated_text(placeholder, kinds):
    """Candidates of every detector next to each other, across line breaks and inside each other's
    tokens (seeded, so a failure reproduces)."""
    rng = random.Random(7)
    docs = ["".join(rng.choice(GENERATED_PIECES) for _ in range(rng.randint(0, 60))) for _ in range(600)]
    expected = [redact(d, set(kinds), placeholder) for d in docs]
    got = redact_batch(docs, pa.array(docs, pa.large_string()), set(kinds), placeholder)
    assert got == ([t for t, _ in expected], [c for _, c in expected])
    assert sum(t != d for d, (t, _) in zip(docs, expected, strict=True)) > 100


EDGE_DOCS = [
    "",
    "\n",
    "\n\n\n",
    "bob@example.com",  # one line, no "\n"
    "bob@example.com\n",  # a last line that is empty
    "\n\nbob@example.com\n\n",
    "mail bob@example.com\r\nhost 10.0.0.1\r\n\r\nphone 555-123-4567\r",  # "\r" stays in its line
    "\r\n\rcard 4111 1111 1111 1111\r",
    # two and three detectors on one line, then more on the next
    "x@y.zz 10.1.2.3 fe80::1 +44 20 7946 0958 4111 1111 1111 1111\nbob@example.com and 192.168.0.1",
    # non-ASCII before, between and inside the changed lines: code points, not bytes, are spliced
    "é ü 日本 \U0001f600\nmail ünï@x.com → bob@example.com\n— 10.0.0.1 ٣\nend 😀 ٥٥٥-١٢٣-٤٥٦٧ 😀",
    "日本語のテキスト\n\n" * 50 + "連絡先: tanaka@example.jp\n" + "さようなら\n" * 50,
    "no pii here\njust text\nand 12 numbers",
    "last line changes, no newline after it\nbob@example.com",
]


@pytest.mark.parametrize("arrow_type", [pa.large_string(), pa.string()])
@pytest.mark.parametrize("chosen", ["all", "some"])
def test_line_table_cuts_lines_as_str_split(arrow_type, chosen):
    """The lines found in Arrow's buffer are ``str.split("\\n")``'s, in a batch that starts at an
    offset into its buffer (a slice) too; each chosen document's lines are consecutive, and the
    bytes of the documents left out between two chosen ones are one null entry."""
    docs = [*EDGE_DOCS, *PII_CASES, CHANGELOG]
    picks = list(range(len(docs))) if chosen == "all" else [0, 1, 2, 5, 6, 9, 10, 11, len(docs) - 1]
    for arr in (pa.array(docs, arrow_type), pa.array(["skipped", *docs], arrow_type)[1:]):
        table = _LineTable(arr, np.array(picks))
        table.lines.validate(full=True)  # offsets within the buffer, ascending; every line UTF-8
        assert len(table.first) == len(picks) + 1
        for n, doc in enumerate(docs[i] for i in picks):
            ids = np.arange(table.first[n], table.first[n] + doc.count("\n") + 1)
            assert table.text_of(ids) == doc.split("\n")
            assert table.by_document(ids) == {n: ids.tolist()}
        null = np.flatnonzero(table.lines.is_null().to_numpy(zero_copy_only=False))
        assert len(null) == (0 if chosen == "all" else 3)  # after 2, 6 and 11
        assert table.first[-1] == sum(docs[i].count("\n") + 1 for i in picks) + len(null)


@pytest.mark.parametrize("placeholder", ["<{kind}>", "[{kind}]", "\n{kind}\n", "{kind}@1.2.3.4", ""])
def test_batch_equals_per_document_at_line_edges(placeholder):
    """Empty documents and lines, "\\r", a last line with and without "\\n", several detectors on
    one line, and non-ASCII text around the changed lines, as a plain and as a sliced array."""
    docs = EDGE_DOCS * 2
    expected = [redact(d, set(PII_KINDS), placeholder) for d in docs]
    want = ([t for t, _ in expected], [c for _, c in expected])
    assert redact_batch(docs, pa.array(docs, pa.large_string()), set(PII_KINDS), placeholder) == want
    sliced = pa.array(["x@y.zz", *docs], pa.string())[1:]
    assert redact_batch(docs, sliced, set(PII_KINDS), placeholder) == want
    chunked = pa.chunked_array([pa.array(docs[:5], pa.large_string()), pa.array(docs[5:], pa.large_string())])
    assert redact_batch(docs, chunked, set(PII_KINDS), placeholder) == want
    assert sum(t != d for d, (t, _) in zip(docs, expected, strict=True)) >= 16


def test_needs_is_only_a_pre_check():
    """The batch path does not consult ``Detector.needs``: it must hold wherever the detector's
    pattern finds a match its validator accepts."""
    rng = random.Random(11)
    texts = ["".join(rng.choice(GENERATED_PIECES) for _ in range(rng.randint(0, 12))) for _ in range(20_000)]
    texts += [*PII_CASES, CHANGELOG, "ab::cd", "1.2.3.4", "a:b:c:d:e:f:1:2"]
    for det in DETECTORS:
        for text in texts:
            if any(det.valid(m.group(0)) for m in det.pattern.finditer(text)):
                assert det.needs(text), (det.name, text)
