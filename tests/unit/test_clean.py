"""Cleaning: Unicode repair, invisible characters, whitespace, and PII redaction with validators."""

import random

import ftfy
import pandas as pd
import pytest

from refinery.clean.cleaning import CleanParams, clean_batch, clean_text
from refinery.clean.normalize import _FTFY_CONFIG, fix_unicode, normalize_whitespace, strip_invisible
from refinery.clean.pii import luhn_valid, redact

ALL = {"email", "phone", "ip", "credit_card"}


def test_mojibake_and_quotes_repaired():
    text, _ = clean_text("The cafÃ© serves â€œspecialâ€\x9d coffee.", CleanParams())
    assert text == 'The café serves "special" coffee.'


def test_ascii_fast_path_matches_ftfy():
    from refinery.sample import prose

    rng = random.Random(8)
    texts = [prose.article(rng) for _ in range(50)] + [prose.boilerplate_page(rng), prose.code_snippet(rng)]
    texts += [
        "Tom &amp; Jerry",
        "caf&eacute;",
        "ansi \x1b[31mred\x1b[0m text",
        "CRLF\r\nline\rold mac",
        "tabs\tand\x0cfeeds",
        "straight \"quotes\" and 'single'",
        "plain",
    ]
    for text in texts:
        assert fix_unicode(text) == ftfy.fix_text(text, _FTFY_CONFIG), text[:40]


def test_invisible_characters_removed_but_joiners_kept():
    raw = "zero\u200bwidth\x00 soft\u00adhyphen bidi\u202e end\ufeff; emoji 👩\u200d💻 keeps its joiner"
    out = strip_invisible(raw)
    assert out == "zerowidth softhyphen bidi end; emoji 👩\u200d💻 keeps its joiner"


def test_whitespace_normalized():
    raw = "  Title\t\u00a0here  \r\n\r\n\r\n\r\n  Body   line \n\n\n\n last  "
    assert normalize_whitespace(strip_invisible(raw)) == "Title here\n\nBody line\n\nlast"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("mail jane.doe+news@mail.example.org now", "email"),
        ("call (555) 123-4567 today", "phone"),
        ("call 555-123-4567 today", "phone"),
        ("call 555.123.4567 today", "phone"),
        ("ring +44 20 7946 0958 please", "phone"),
        ("ring +1 415 555 2671 please", "phone"),
        ("office 020 7946 0958 ext", "phone"),
        ("server 192.168.1.20 down", "ip"),
        ("v6 at 2001:db8:85a3::8a2e:370:7334 ok", "ip"),
        ("loopback ::1 is excluded but fe80::1ff:fe23:4567:890a is not", "ip"),
        ("card 4111 1111 1111 1111 charged", "credit_card"),
        ("card 5500-0000-0000-0004 charged", "credit_card"),
        ("card 378282246310005 charged", "credit_card"),
    ],
)
def test_pii_detected(text, kind):
    out, counts = redact(text, ALL)
    assert counts[kind] == 1, (out, counts)
    assert f"<{kind.upper()}>" in out
    assert sum(counts.values()) == 1


@pytest.mark.parametrize(
    "text",
    [
        "In 2019 the town had 12,450 residents and 3 schools.",
        "The price rose from $1,299.99 to $1,499.00 in 2021-2022.",
        "ISBN 978-3-16-148410-0 was printed on 2023-04-05.",
        "Version 1.2.3 fixed bug 4521; see section 10.4.2.",
        "Meet at 10:30:45 or at 12:00.",
        "The card 4111 1111 1111 1112 fails the Luhn check.",
        "Order 1234567890123 shipped.",
        "An address 999.300.1.1 is not an IPv4 address.",
        "Scores were 10 20 30 40 50 in that order.",
    ],
)
def test_pii_negatives_left_alone(text):
    out, counts = redact(text, ALL)
    assert out == text, counts
    assert sum(counts.values()) == 0


def test_luhn():
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")


def test_redaction_kinds_switchable():
    text = "write a@b.example or call 555-123-4567"
    out, counts = redact(text, {"phone"})
    assert "a@b.example" in out and "<PHONE>" in out and counts["email"] == 0


def test_clean_batch_counts_and_drops_emptied_documents():
    frame = pd.DataFrame({"id": ["a", "b"], "text": ["Reach me: x.y@z.example \u200b", "\u200b\u200b\x00"]})
    result = clean_batch(frame, CleanParams())
    assert result.kept["text"].tolist() == ["Reach me: <EMAIL>"]
    assert result.kept["pii_email"].tolist() == [1] and bool(result.kept["text_changed"].iloc[0])
    assert result.rejected["reason"].tolist() == ["empty_after_cleaning"]
    assert result.rejected["id"].tolist() == ["b"]


def test_unknown_pii_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown PII kinds"):
        clean_batch(pd.DataFrame({"id": ["a"], "text": ["x"]}), CleanParams(redact=["ssn"]))
