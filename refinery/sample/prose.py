"""A seeded generator of English web-like documents: prose, and the junk a crawl contains.

The prose comes from a sentence grammar over topic vocabularies, so documents read like
articles (varied sentence shapes, function words, punctuation, paragraphs) while no two share
long passages unless made to. The junk generators produce what the filters exist for:
navigation boilerplate, cookie banners, keyword spam, lorem ipsum, code, short stubs, bullet
dumps, other languages, PII, mojibake. Used for the bundled sample, the tests and benchmarks.
"""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path

_VOCABULARY = json.loads((Path(__file__).parent / "prose_vocabulary.json").read_text(encoding="utf-8"))
TOPICS: dict[str, dict[str, list[str]]] = _VOCABULARY["topics"]
TEMPLATES: list[str] = _VOCABULARY["templates"]
COUNTS: list[str] = _VOCABULARY["counts"]
NAV_WORDS: list[str] = _VOCABULARY["nav_words"]
FOREIGN: dict[str, list[str]] = _VOCABULARY["foreign"]
SYNONYMS: dict[str, list[str]] = _VOCABULARY["synonyms"]
OPENERS: list[str] = _VOCABULARY["openers"]
_TEMPLATE_WORD = re.compile(r"\{[^}]*\}|[A-Za-z]+")


def _vary(template: str, rng: random.Random) -> str:
    """Swap the template's own words for synonyms at random and sometimes add an opener, so a long
    article that reuses a template does not repeat its wording word for word (writers vary it too)."""

    def swap(m: re.Match) -> str:
        word = m.group(0)
        options = SYNONYMS.get(word)
        return rng.choice(options) if options and rng.random() < 0.6 else word

    varied = _TEMPLATE_WORD.sub(swap, template)
    if rng.random() < 0.2 and varied[0] != "{":
        varied = rng.choice(OPENERS) + varied[0].lower() + varied[1:]
    return varied


def _fill(template: str, vocab: dict[str, list[str]], rng: random.Random) -> str:
    adj, adj2 = rng.sample(vocab["adj"], 2)
    noun, noun2 = rng.sample(vocab["noun"], 2)
    sentence = template.format(
        noun=noun,
        noun2=noun2,
        Noun=noun[0].upper() + noun[1:],
        adj=adj,
        adj2=adj2,
        verb=rng.choice(vocab["verb"]),
        person=rng.choice(vocab["person"]),
        Person=rng.choice(vocab["person"]).capitalize(),
        place=rng.choice(vocab["place"]),
        time=rng.choice(vocab["time"]),
        Time=rng.choice(vocab["time"]).capitalize(),
        count=rng.choice(COUNTS),
    )
    return sentence[0].upper() + sentence[1:]


class _TemplateDeck:
    """Deals templates without repeats until the deck runs out, as a writer varies sentences."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.cards: list[str] = []

    def draw(self) -> str:
        if not self.cards:
            self.cards = list(TEMPLATES)
            self.rng.shuffle(self.cards)
        return _vary(self.cards.pop(), self.rng)


def paragraph(
    rng: random.Random,
    topic: str | None = None,
    sentences: int | None = None,
    deck: _TemplateDeck | None = None,
) -> str:
    vocab = TOPICS[topic or rng.choice(list(TOPICS))]
    deck = deck or _TemplateDeck(rng)
    n = sentences or rng.randint(3, 7)
    return " ".join(_fill(deck.draw(), vocab, rng) for _ in range(n))


def article(rng: random.Random, topic: str | None = None, paragraphs: int | None = None) -> str:
    """A multi-paragraph article; lengths roughly log-normal, median ~2 KB."""
    topic = topic or rng.choice(list(TOPICS))
    n = paragraphs or max(2, min(12, int(rng.lognormvariate(1.4, 0.5))))
    deck = _TemplateDeck(rng)
    title = f"{rng.choice(TOPICS[topic]['adj']).capitalize()} notes on {rng.choice(TOPICS[topic]['noun'])}"
    return title + "\n\n" + "\n\n".join(paragraph(rng, topic, deck=deck) for _ in range(n))


# -- junk ---------------------------------------------------------------------------------------


def boilerplate_page(rng: random.Random) -> str:
    nav = " | ".join(rng.sample(NAV_WORDS, 6))
    lines = [nav, "Skip to main content", "Menu", "Search"]
    lines += [
        "This website uses cookies to improve your experience. By continuing you accept our cookie policy.",
        "Please enable JavaScript in your browser to view this page.",
        "Read our Privacy Policy and Terms of Use.",
        f"© {rng.randint(2009, 2024)} All rights reserved.",
        nav,
        "Share | Tweet | Pin | Email",
    ]
    return "\n".join(lines)


def keyword_spam(rng: random.Random) -> str:
    words = rng.sample(
        [
            "cheap",
            "best",
            "buy",
            "discount",
            "casino",
            "bonus",
            "free",
            "online",
            "pills",
            "loans",
            "win",
            "now",
            "deal",
            "offer",
            "sale",
        ],
        5,
    )
    line = " ".join(w.upper() if rng.random() < 0.3 else w for w in words) + rng.choice(["!!!", "", " now"])
    return "\n".join([line] * rng.randint(8, 30) + ["Click here >>> www.best-" + words[0] + "-deals.example"])


def lorem_ipsum(rng: random.Random) -> str:
    """An English page whose template placeholder was never replaced."""
    body = article(rng, paragraphs=rng.randint(2, 4))
    placeholder = (
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt "
        "ut labore et dolore magna aliqua."
    )
    return body + "\n\n" + placeholder


def code_snippet(rng: random.Random) -> str:
    """A how-to page that quotes configuration in braces inside otherwise normal prose."""
    name = rng.choice(["config", "handler", "widget", "parser"])
    body = article(rng, "software", paragraphs=rng.randint(2, 4))
    return (
        body + f'\n\nTo enable it, add {{"{name}": true, "retries": {rng.randint(1, 9)}}} to the settings '
        "file and restart the service."
    )


def bullet_dump(rng: random.Random) -> str:
    vocab = TOPICS[rng.choice(list(TOPICS))]
    return "\n".join(
        f"- {rng.choice(vocab['noun'])} ({rng.choice(vocab['adj'])})" for _ in range(rng.randint(12, 30))
    )


def short_stub(rng: random.Random) -> str:
    return rng.choice(
        [
            "Page not found.",
            "Coming soon!",
            "Thanks for subscribing to our newsletter.",
            "Error 503: service temporarily unavailable. Please try again later.",
            "No results for your search.",
        ]
    )


def foreign_article(rng: random.Random, lang: str | None = None) -> str:
    sentences = list(FOREIGN[lang or rng.choice(list(FOREIGN))])
    rng.shuffle(sentences)
    cut = sorted(rng.sample(range(2, len(sentences) - 1), 2))
    parts = [sentences[: cut[0]], sentences[cut[0] : cut[1]], sentences[cut[1] :]]
    return "\n\n".join(" ".join(p) for p in parts)


# -- PII, mojibake, near duplicates ---------------------------------------------------------------


def luhn_number(rng: random.Random, prefix: str = "4", length: int = 16) -> str:
    digits = [int(c) for c in prefix] + [rng.randint(0, 9) for _ in range(length - len(prefix) - 1)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    digits.append((10 - total % 10) % 10)
    s = "".join(map(str, digits))
    return " ".join(s[i : i + 4] for i in range(0, len(s), 4))


EMAIL_DOMAINS = ["example.com", "mail.example.org", "corp.example"]


def fake_pii(rng: random.Random) -> dict[str, str]:
    user = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 9)))
    return {
        "email": f"{user}.{rng.randint(1, 99)}@{rng.choice(EMAIL_DOMAINS)}",
        "phone": rng.choice(
            [
                f"({rng.randint(200, 989)}) {rng.randint(200, 989)}-{rng.randint(1000, 9999)}",
                f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
                f"{rng.randint(200, 989)}-{rng.randint(200, 989)}-{rng.randint(1000, 9999)}",
            ]
        ),
        "ip": rng.choice(
            [
                f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                f"2001:db8:{rng.randint(1, 9999):x}::{rng.randint(1, 255):x}",
            ]
        ),
        "credit_card": luhn_number(rng),
    }


def with_pii(text: str, rng: random.Random) -> str:
    pii = fake_pii(rng)
    extra = (
        f"\n\nFor questions, write to {pii['email']} or call {pii['phone']}. "
        f"Our server at {pii['ip']} logs every request. "
        f"One reader even posted the card number {pii['credit_card']} by mistake, which we have reported."
    )
    return text + extra


MOJIBAKE = {"é": "Ã©", "’": "â€™", "“": "â€œ", "—": "â€”", "ü": "Ã¼"}


def with_mojibake(text: str) -> str:
    text = text.replace(" the ", " the café’s “special” — ", 1)
    for good, bad in MOJIBAKE.items():
        text = text.replace(good, bad)
    return text


def near_duplicate(text: str, rng: random.Random, edits: int = 3) -> str:
    """Small edits: a few words swapped or dropped, as a scraped copy of the same article."""
    words = text.split(" ")
    for _ in range(edits):
        i = rng.randrange(len(words))
        op = rng.random()
        if op < 0.4:
            words[i] = rng.choice(["really", "quite", "also", "indeed", "simply"])
        elif op < 0.7 and len(words) > 10:
            del words[i]
        else:
            words.insert(i, rng.choice(["(updated)", "very", "now"]))
    return " ".join(words)


def surface_variant(text: str) -> str:
    """Same words, different case, spacing and punctuation: an exact duplicate once normalised."""
    return text.upper().replace(". ", " .  ").replace(",", " ,")
