"""The batch redaction's line paths: detectors run over a document's flagged lines joined in one
call, e-mails replaced without a callback, and the IPv6 validator's shortcut, each equal to the
per-document reference (:func:`refinery.clean.pii.redact`) or to ``ipaddress`` itself."""

import ipaddress
import random

import pyarrow as pa
import pytest

from refinery.clean.pii import DETECTORS, PII_KINDS, _ipv6_ok, alphabet, redact, redact_batch, tokens_inert
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
