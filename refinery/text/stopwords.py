"""Stop-word lists for Gopher's stop-word rule, per language.

Gopher (Rae et al. 2021, appendix A) keeps a document only if it contains at least two of eight
very common English words ("the", "be", "to", "of", "and", "that", "have", "with"): real prose
always does, word lists, tables and spam often do not. The rule transfers to any language with
that language's most frequent function words; an English list applied to German rejects German
prose instead.

Each list below holds ten of the most frequent function words of its language (articles,
conjunctions, prepositions, the copula, the commonest pronouns), short like Gopher's list so that
"two of them" stays a real test. Every word is taken from stopwords-iso (MIT licence,
https://github.com/stopwords-iso, shipped offline by the ``stopwordsiso`` package on PyPI);
``tests/unit/test_language_rules.py`` checks each word against that package. How often each list
passes on its own language and on others is measured on Debian's translated manual pages by
``benchmarks/bench_parsing.py language`` (docs/language.md).
"""

from __future__ import annotations

from refinery.text.english import GOPHER_STOP_WORDS

GOPHER_STOP_WORDS_BY_LANGUAGE: dict[str, tuple[str, ...]] = {
    "en": GOPHER_STOP_WORDS,
    "de": ("der", "die", "und", "in", "den", "von", "zu", "das", "mit", "ist"),
    "fr": ("de", "la", "le", "et", "les", "des", "est", "un", "une", "que"),
    "es": ("de", "la", "que", "el", "en", "y", "los", "se", "las", "por"),
    "it": ("di", "e", "il", "la", "che", "per", "un", "in", "è", "non"),
    "pt": ("de", "a", "o", "que", "e", "do", "da", "em", "um", "para"),
    "nl": ("de", "en", "het", "van", "een", "is", "in", "dat", "op", "te"),
    "pl": ("i", "w", "z", "na", "się", "nie", "do", "to", "że", "jest"),
    "sv": ("och", "i", "att", "det", "som", "en", "på", "är", "av", "för"),
    "ru": ("и", "в", "не", "на", "что", "с", "по", "это", "как", "для"),
}


def gopher_stop_words(language: str) -> tuple[str, ...] | None:
    """The Gopher stop-word list for an ISO 639-1 code, or None when none ships for it."""
    return GOPHER_STOP_WORDS_BY_LANGUAGE.get(language)
