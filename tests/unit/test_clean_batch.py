"""clean_batch over whole batches (RE2 kernels, ftfy behind its pre-check, PII candidates) gives
exactly what the per-document reference path gives: ftfy.fix_text, NFC, strip, tidy, redact."""

import random
import unicodedata
from functools import cache

import ftfy
import pandas as pd
import pytest

from refinery.clean.cleaning import CleanParams, clean_batch, clean_texts
from refinery.clean.normalize import normalize_form, normalize_whitespace, strip_invisible
from refinery.clean.pii import PII_KINDS, redact
from tests.unit.real_text import real_documents

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PII_CASES = [
    "mail jane.doe+news@mail.example.org now, or bob@example.com",
    "me@x.co+1 202 555 0100 (an e-mail right before a phone: the phone only shows after redaction)",
    "call (555) 123-4567 or 555-123-4567 or 555.123.4567 or +44 20 7946 0958 or 020 7946 0958",
    "card 4111 1111 1111 1111 and 4111-1111-1111-1112 (bad Luhn) and 0000000000000",
    "servers 192.168.1.20, 10.0.0.256 (no), ::1, fe80::1ff:fe23:4567:890a and a:b:c:d:e:f",
    "versions 1.2.3.4 and 2024-01-02 and ISBN 978-3-16-148410-0 and 1,000,000",
    "Arabic-Indic digits ٤١١١ ١١١١ ١١١١ ١١١١ and ٥٥٥-١٢٣-٤٥٦٧",
    "lines\nsplit 555-123-\n4567 across a break\nuser@\nexample.com",
    "adjacent bob@example.com192.168.1.1 and x@y.zz5",
]
WHITESPACE_ALPHABET = [
    " ",
    "  ",
    "\t",
    "\n",
    "\n\n\n",
    "\r\n",
    "\r",
    "\u00a0",
    "\u3000",
    "\u2028",
    "\x0c",
    "a",
    "b.",
]


@cache
def _ftfy(text: str) -> str:
    return ftfy.fix_text(text)


def reference(text: str, params: CleanParams) -> tuple[str, dict[str, int]]:
    """The plain per-document path, with ftfy called on every document."""
    out = _ftfy(text) if params.fix_unicode else text
    if params.unicode_form != "none":
        out = normalize_form(out, params.unicode_form)
    if params.strip_invisible:
        out = strip_invisible(out)
    if params.normalize_whitespace:
        out = normalize_whitespace(out)
    return redact(out, set(params.redact), params.placeholder)


def whitespace_soup(n: int) -> list[str]:
    rng = random.Random(5)
    return ["".join(rng.choice(WHITESPACE_ALPHABET) for _ in range(rng.randint(0, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def texts():
    # NFD copies: the batch path leaves NFC out after ftfy (its output is NFC): they check that
    decomposed = [unicodedata.normalize("NFD", t) for t in [*real_documents(12), "e\u0301 A\u030a Å ﬁ\u0301"]]
    return list(real_documents()) + PII_CASES + whitespace_soup(400) + decomposed


@pytest.mark.parametrize(
    "params",
    [
        CleanParams(),
        CleanParams(fix_unicode=False, unicode_form="NFKC"),
        CleanParams(unicode_form="NFKC"),
        CleanParams(unicode_form="none", strip_invisible=False),
        CleanParams(normalize_whitespace=False, redact=["phone", "ip"]),
        CleanParams(redact=["credit_card"], placeholder="[{kind} 555-123-4567]"),  # digits in the token
        CleanParams(redact=[]),
    ],
    ids=[
        "defaults",
        "nfkc-no-ftfy",
        "nfkc",
        "no-form-no-strip",
        "no-tidy-some-kinds",
        "digit-token",
        "no-pii",
    ],
)
def test_batch_equals_reference(texts, params):
    expected = [reference(t, params) for t in texts]
    got_texts, got_counts = clean_texts(texts, params)
    assert got_texts == [t for t, _ in expected]
    assert got_counts == [c for _, c in expected]


def test_fixture_exercises_every_detector(texts):
    totals = dict.fromkeys(PII_KINDS, 0)
    for _, counts in (redact(t, set(PII_KINDS)) for t in texts):
        for kind, n in counts.items():
            totals[kind] += n
    assert all(totals.values()), totals


def test_surrogates_take_the_per_document_path():
    texts = ["bad \ud800 text with 555-123-4567", "plain"]
    got, counts = clean_texts(texts, CleanParams())
    assert got == [reference(t, CleanParams())[0] for t in texts] and counts[0]["phone"] == 1


def test_clean_batch_columns_and_changed_flags():
    frame = pd.DataFrame(
        {"id": ["a", "b", "c"], "text": ["keep me", "caf\u00c3\u00a9 bob@example.com", "\u200b "]}
    )
    result = clean_batch(frame, CleanParams())
    assert result.kept["text"].tolist() == ["keep me", "café <EMAIL>"]
    assert result.kept["text_changed"].tolist() == [False, True]
    assert result.kept["pii_email"].tolist() == [0, 1]
    assert result.rejected["reason"].tolist() == ["empty_after_cleaning"]
