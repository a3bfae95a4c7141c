"""Route documents by their language label; filter each language with its own rule set.

The heuristic rules are English in three places: Gopher's stop words, C4's sentence and policy
rules, and the gate in front of them. With ``language``/``language_score`` columns
(:mod:`refinery.text.language_id`) nothing needs to be rejected for being another language:

- a document whose label is in ``languages`` (the main languages, default English) with a score
  of at least ``min_language_score`` goes to the **main** output, filtered by its language's rule
  set — the pipeline's English-trained stages (KenLM, the quality classifier, MiniLM) continue
  from there;
- every other document goes to the **other-languages** output, filtered by its own language's
  rule set, kept with its ``language`` column; it is never dropped for its language.

Rule sets (``rule_set`` column names the one applied):

- ``en``: the published English rules (HeuristicParams defaults).
- a language with a stop-word list (:mod:`refinery.text.stopwords`: de, fr, es, it, pt, nl, pl,
  sv, ru): the same Gopher and C4 rules with that language's stop words. C4's terminal
  punctuation and sentence rules hold for these scripts; its policy phrases are English and
  simply never match other languages.
- ``agnostic``: any other language, and documents whose label is ``unknown`` or below
  ``min_language_score``: Gopher quality (shape) and repetition only — no stop words, no C4.
- ``agnostic_no_spaces`` (zh, ja, th, written without spaces between words): as ``agnostic``
  but without the rules that count words (word count, word length, per-token ratios, n-gram
  repetition), which a ``\\w+`` tokenizer cannot count there; line and paragraph repetition,
  bullets and ellipsis lines remain.

``overrides`` adjusts any rule set per language (``{"de": {"max_avg_word_length": 12}}``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field

from refinery import markdown
from refinery.batch import BatchResult
from refinery.filters.chain import CHAIN, SCORE_FIELDS, filter_batch
from refinery.filters.language import DEFAULT_MIN_LANGUAGE_SCORE
from refinery.filters.params import HeuristicParams
from refinery.kernel.processor import StageProcessor
from refinery.metadata import Json, Markdown
from refinery.text.language_id import DEFAULT_MODEL, UNKNOWN
from refinery.text.language_models import MIN_SCORE_BY_MODEL
from refinery.text.stopwords import GOPHER_STOP_WORDS_BY_LANGUAGE

NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th"})
RULE_SET_FIELD = pa.field("rule_set", pa.string())
ROUTED_FIELDS = [*SCORE_FIELDS, RULE_SET_FIELD]

# What each rule declares (refinery/filters/rules/): the parameter values that switch off the parts
# that assume a language's own words, and those that count words (meaningless without spaces).
_AGNOSTIC = {name: off for rule in CHAIN.rules for name, off in rule.language_specific.items()}
_NO_WORD_COUNTS = {name: off for rule in CHAIN.rules for name, off in rule.counts_words.items()}


class LanguageRouting(BaseModel):
    """Which languages are the main output, and how each language is filtered."""

    languages: list[str] = Field(
        ["en"], description="Main languages (ISO 639-1): the rest go to the other-languages output."
    )
    min_language_score: float | None = Field(
        None,
        description="Below this language score a document counts as 'unknown' (agnostic rules, other "
        "output). None: the labelling model's own (lingua 0.65, fastText 0.2, CLD3 0.3).",
    )
    overrides: dict[str, dict] = Field(
        {}, description="Per-language HeuristicParams fields, e.g. {'de': {'min_doc_words': 40}}."
    )

    def for_model(self, model: str | None) -> LanguageRouting:
        """This routing with ``min_language_score`` resolved for labels made by ``model`` (None:
        the default model); an explicit score is kept as it is."""
        if self.min_language_score is not None:
            return self
        score = MIN_SCORE_BY_MODEL.get(model or DEFAULT_MODEL, DEFAULT_MIN_LANGUAGE_SCORE)
        return self.model_copy(update={"min_language_score": score})


def rule_set_name(language: str) -> str:
    if language == "en":
        return "en"
    if language in GOPHER_STOP_WORDS_BY_LANGUAGE:
        return language
    if language in NO_SPACE_LANGUAGES:
        return "agnostic_no_spaces"
    return "agnostic"


def rule_params(
    language: str, base: HeuristicParams | None = None, overrides: dict | None = None
) -> HeuristicParams:
    """The heuristic parameters for documents labelled ``language`` (``unknown`` included).

    The English function-word gate is off in every rule set: the language was decided by the label.
    """
    base = base or HeuristicParams()
    name = rule_set_name(language)
    changes: dict = {"language_gate": False}
    if name == "en":
        changes["language"] = "en"
    elif name == language:  # a language with its own stop words
        changes.update(language=language, stop_words=list(GOPHER_STOP_WORDS_BY_LANGUAGE[language]))
    else:
        changes.update(language=language, **_AGNOSTIC)
        if name == "agnostic_no_spaces":
            changes.update(_NO_WORD_COUNTS)
    changes.update((overrides or {}).get(language, {}))
    return HeuristicParams(**{**base.model_dump(), **changes})  # validated: disabled_rules apply


def route_keys(frame: pd.DataFrame, routing: LanguageRouting) -> list[str]:
    """The rule-set language per row: its label, or ``unknown`` when unlabelled or unsure."""
    minimum = routing.for_model(None).min_language_score
    keys = []
    for language, score in zip(frame["language"].tolist(), frame["language_score"].tolist(), strict=True):
        unsure = language is None or language == UNKNOWN or score is None or not score >= minimum
        keys.append(UNKNOWN if unsure else language)
    return keys


# -- the two stages' processors (heuristic_filtered, multilingual_filtered) -----------------------
def main_language_mask(frame: pd.DataFrame, routing: LanguageRouting) -> np.ndarray:
    """Rows for the main output: labelled with a main language at ``min_language_score`` or more,
    or not labelled at all (``label_language`` off upstream: the rule set's own gate decides)."""
    if "language" not in frame.columns:
        return np.ones(len(frame), dtype=bool)
    main = set(routing.languages)
    unlabelled = frame["language"].isna().to_numpy()
    keys = np.array(route_keys(frame, routing), dtype=object)
    return unlabelled | np.isin(keys, list(main))


class LanguageFilter(StageProcessor):
    """A batch processor over one side of the language routing: each language's rows filtered by
    its rule set (:func:`rule_params`), a ``rule_set`` column naming it, rows kept in input order.

    ``route(frame)`` selects the side's rows (:func:`refinery.kernel.processor.routed_input`), so one
    partition splits over two stages with every row in exactly one of them. Rows without a label
    (labelling off upstream) belong to the main side and get ``base`` unchanged, gate included.
    Counts per language and rule set go to the report (and travel between engine workers).
    """

    def __init__(self, routing: LanguageRouting, base: HeuristicParams, main: bool):
        self.routing, self.base, self.main = routing, base, main
        self.counts: dict[str, dict[str, int]] = {}

    def route(self, frame: pd.DataFrame) -> np.ndarray:
        mask = main_language_mask(frame, self.routing)
        return mask if self.main else ~mask

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        frame = frame.reset_index(drop=True)
        if not len(frame):  # every row routed to the other side: empty, with every output column
            empty = filter_batch(frame, self.base)
            return BatchResult(
                empty.kept.assign(rule_set=pd.Series(dtype=object)),
                empty.rejected.assign(rule_set=pd.Series(dtype=object)),
            )
        if "language" in frame.columns:  # unlabelled rows (labelling off upstream): key None
            labelled = frame["language"].notna().tolist()
            routed = route_keys(frame, self.routing)
            keys = pd.Series(
                [k if ok else None for k, ok in zip(routed, labelled, strict=True)], dtype=object
            )
        else:  # no label column at all: one group, the base rules
            keys = pd.Series([None] * len(frame), index=frame.index, dtype=object)
        kept, rejected = [], []
        for key in dict.fromkeys(keys.tolist()):
            group = frame.loc[keys.isna() if key is None else keys == key]
            params = self.base if key is None else rule_params(key, self.base, self.routing.overrides)
            name = self.base.language if key is None else rule_set_name(key)
            result = filter_batch(group.reset_index(drop=True), params)
            kept.append(result.kept.assign(rule_set=name))
            rejected.append(result.rejected.assign(rule_set=name))
            self._count(key, name, len(group), len(result.kept))
        position = dict(zip(frame["id"], range(len(frame)), strict=True))
        return BatchResult(_in_order(kept, position, frame), _in_order(rejected, position, frame))

    def _count(self, key: str | None, rule_set: str, rows: int, kept: int) -> None:
        entry = self.counts.setdefault(f"{key or 'unlabelled'}|{rule_set}", {"documents": 0, "kept": 0})
        entry["documents"] += rows
        entry["kept"] += kept

    def report(self) -> dict:
        rows = []
        for key, entry in sorted(self.counts.items(), key=lambda kv: (-kv[1]["documents"], kv[0])):
            language, rule_set = key.split("|", 1)
            rows.append((language, rule_set, entry["documents"], entry["kept"]))
        listed = ", ".join(self.routing.languages)
        heading = f"Main languages: {listed}" if self.main else f"Every language but {listed}"
        table = markdown.table(["language", "rule set", "documents", "kept"], rows) if rows else "_none_"
        return {"routing": Json(self.routing.model_dump()), "languages": Markdown(f"{heading}\n\n{table}")}

    def summary(self) -> dict:
        return {"languages": {k: dict(v) for k, v in self.counts.items()}}

    def absorb(self, summary: dict) -> None:
        """Add another worker's counts (the Ray engine filters slices in parallel)."""
        for key, entry in summary.get("languages", {}).items():
            mine = self.counts.setdefault(key, {"documents": 0, "kept": 0})
            for name, n in entry.items():
                mine[name] = mine.get(name, 0) + n


def _in_order(parts: list[pd.DataFrame], position: dict, like: pd.DataFrame) -> pd.DataFrame:
    """The groups' rows back in the batch's reading order (ids are unique within a partition)."""
    rows = [p for p in parts if len(p)]
    if not rows:  # an empty result keeps its columns (reason, detail for the rejected side)
        return parts[0].iloc[0:0] if parts else like.iloc[0:0].assign(rule_set=pd.Series(dtype=object))
    out = pd.concat(rows, ignore_index=True)
    order = np.argsort(out["id"].map(position).to_numpy(), kind="stable")
    return out.iloc[order].reset_index(drop=True)
