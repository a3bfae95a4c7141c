"""Redaction of personal data: e-mail addresses, phone numbers, IP addresses, payment cards.

Each detector is a regex for candidates plus a validator, because bare patterns over-match:
card numbers must pass the Luhn check, IPs must parse with :mod:`ipaddress`, phone numbers must
have a plausible digit count and a phone-like shape (separators, a ``+`` or parentheses) so
that years, prices and ISBNs are left alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

PII_KINDS = ("email", "phone", "ip", "credit_card")

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}\b"
)
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}:){1,7}(?::|(?::[0-9A-Fa-f]{1,4}){1,7}|[0-9A-Fa-f]{1,4})(?![\w:])"
)
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"  # +44 20 7946 0958
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]?\d{4}"  # (555) 123-4567
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-123-4567, 555.123.4567
    r"|\d{3} \d{3} \d{4}"  # 555 123 4567
    r"|0\d{2,4}[ -]\d{3,4}[ -]\d{3,4}"  # 020 7946 0958
    r")(?![\w])"
)


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
    if match.count(":") < 2 or sum(c.isalnum() for c in match) < 2:
        return False
    try:
        ipaddress.IPv6Address(match)
    except ValueError:
        return False
    return True


def _phone_ok(match: str) -> bool:
    digits = sum(c.isdigit() for c in match)
    return 7 <= digits <= 15


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern
    valid: Callable[[str], bool]
    needs: Callable[[str], bool]  # cheap pre-check that skips the regex on most texts


# Order matters: card numbers before phones (a card's digit groups look like a phone number),
# IPv6 before phones (hex groups of digits) and e-mails before everything (digits in user names).
DETECTORS = (
    Detector("email", _EMAIL, lambda m: True, lambda t: "@" in t),
    Detector("credit_card", _CARD, _card_ok, lambda t: True),
    Detector("ip", _IPV6, _ipv6_ok, lambda t: "::" in t or t.count(":") >= 5),
    Detector("ip", _IPV4, _ipv4_ok, lambda t: "." in t),
    Detector("phone", _PHONE, _phone_ok, lambda t: True),
)

_HAS_DIGIT_RUN = re.compile(r"\d\d")


def redact(
    text: str, kinds: frozenset[str] | set[str], placeholder: str = "<{kind}>"
) -> tuple[str, dict[str, int]]:
    """Replace detected PII with a placeholder; return the text and counts per kind."""
    counts = dict.fromkeys(PII_KINDS, 0)
    has_digits = _HAS_DIGIT_RUN.search(text) is not None
    for det in DETECTORS:
        if det.kind not in kinds or not det.needs(text) or (det.kind != "email" and not has_digits):
            continue
        token = placeholder.format(kind=det.kind.upper())

        def _replace(m: re.Match, det: Detector = det, token: str = token) -> str:
            if det.valid(m.group(0)):
                counts[det.kind] += 1
                return token
            return m.group(0)

        text = det.pattern.sub(_replace, text)
    return text, counts
