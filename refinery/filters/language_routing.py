"""Route documents by their lingua label; filter each language with its own rule set.

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

import time
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field

from refinery.batch import BatchResult
from refinery.filters.chain import SCORE_FIELDS, filter_batch
from refinery.filters.language import DEFAULT_MIN_LANGUAGE_SCORE
from refinery.filters.params import HeuristicParams
from refinery.schema import extend, with_reasons
from refinery.stages.runner import StageRun
from refinery.stats import StageStats
from refinery.text.language_id import LANGUAGE_FIELDS, UNKNOWN, LanguageIdParams, label_batch
from refinery.text.stopwords import GOPHER_STOP_WORDS_BY_LANGUAGE

NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th"})
RULE_SET_FIELD = pa.field("rule_set", pa.string())
ROUTED_FIELDS = [*SCORE_FIELDS, RULE_SET_FIELD]

_AGNOSTIC = {"min_stop_words": None, "c4": False}
_NO_WORD_COUNTS = {
    "min_doc_words": None,
    "max_doc_words": None,
    "min_avg_word_length": None,
    "max_avg_word_length": None,
    "max_hash_word_ratio": None,
    "max_ellipsis_word_ratio": None,
    "min_alpha_words_ratio": None,
    **{f"max_top_{n}gram_char_frac": None for n in (2, 3, 4)},
    **{f"max_dup_{n}gram_char_frac": None for n in range(5, 11)},
}


class LanguageRouting(BaseModel):
    """Which languages are the main output, and how each language is filtered."""

    languages: list[str] = Field(
        ["en"], description="Main languages (ISO 639-1): the rest go to the other-languages output."
    )
    min_language_score: float = Field(
        DEFAULT_MIN_LANGUAGE_SCORE,
        description="Below this lingua score a document counts as 'unknown' (agnostic rules, other output).",
    )
    overrides: dict[str, dict] = Field(
        {}, description="Per-language HeuristicParams fields, e.g. {'de': {'min_doc_words': 40}}."
    )


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

    The English function-word gate is off in every rule set: the language was decided by lingua.
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
    keys = []
    for language, score in zip(frame["language"].tolist(), frame["language_score"].tolist(), strict=True):
        unsure = (
            language is None
            or language == UNKNOWN
            or score is None
            or not score >= routing.min_language_score
        )
        keys.append(UNKNOWN if unsure else language)
    return keys


@dataclass
class RoutedBatch:
    """One batch split by language and filtered: ``main`` and ``other`` outputs (kept/rejected),
    plus the input rows each output received, so every row is accounted for once."""

    main: BatchResult
    other: BatchResult
    main_input: pd.DataFrame
    other_input: pd.DataFrame

    @property
    def rows_out(self) -> int:
        return sum(len(r.kept) + len(r.rejected) for r in (self.main, self.other))


def split_by_language(frame: pd.DataFrame, routing: LanguageRouting) -> dict[str, pd.DataFrame]:
    """Rows grouped by rule-set language, each group in input order (rows in = Σ rows out)."""
    keys = pd.Series(route_keys(frame, routing), index=frame.index)
    return {key: frame.loc[keys == key] for key in dict.fromkeys(keys.tolist())}


def filter_by_language(
    frame: pd.DataFrame, routing: LanguageRouting | None = None, base: HeuristicParams | None = None
) -> RoutedBatch:
    """Filter each language with its rule set; route main languages and the rest apart."""
    routing = routing or LanguageRouting()
    main_languages = set(routing.languages)
    parts: dict[bool, list[tuple[pd.DataFrame, BatchResult]]] = {True: [], False: []}
    for language, group in split_by_language(frame, routing).items():
        result = filter_batch(group.reset_index(drop=True), rule_params(language, base, routing.overrides))
        name = rule_set_name(language)
        result.kept["rule_set"] = name
        result.rejected["rule_set"] = name
        parts[language in main_languages].append((group, result))
    main, main_in = _combine(parts[True], frame)
    other, other_in = _combine(parts[False], frame)
    return RoutedBatch(main, other, main_in, other_in)


def _combine(parts: list[tuple[pd.DataFrame, BatchResult]], frame: pd.DataFrame):
    if not parts:
        empty = frame.iloc[0:0]
        return BatchResult(
            empty.assign(rule_set=pd.Series(dtype=object)), empty.assign(rule_set=pd.Series(dtype=object))
        ), empty
    inputs = pd.concat([g for g, _ in parts]).sort_index()
    kept = pd.concat([r.kept for _, r in parts], ignore_index=True)
    rejected = pd.concat([r.rejected for _, r in parts], ignore_index=True)
    return BatchResult(kept, rejected), inputs


def filter_batch_per_language(
    frame: pd.DataFrame, routing: LanguageRouting | None = None, base: HeuristicParams | None = None
) -> BatchResult:
    """One output for every language (the single-asset wiring): kept rows of all rule sets."""
    routed = filter_by_language(frame, routing, base)
    kept = pd.concat([routed.main.kept, routed.other.kept], ignore_index=True)
    rejected = pd.concat([routed.main.rejected, routed.other.rejected], ignore_index=True)
    return BatchResult(kept, rejected)


def run_routed_stage(
    storage,
    upstream: str,
    main_asset: str,
    other_asset: str,
    partition: str,
    routing: LanguageRouting,
    base: HeuristicParams,
    provenance: dict,
    label_params: LanguageIdParams | None = None,
    batch_rows: int = 5_000,
) -> tuple[StageRun, StageRun]:
    """Stream ``upstream``'s partition into two assets: main languages and every other one.

    Each asset has its own kept and rejected files and statistics; ``rows_in`` of each is the rows
    routed to it, and the two add up to the upstream partition's rows. An upstream without
    ``language``/``language_score`` columns is labelled here with ``label_params``.
    """
    started = time.perf_counter()
    in_schema = storage.schema(upstream, partition)
    has_labels = {"language", "language_score"} <= set(in_schema.names)
    schema = extend(in_schema if has_labels else extend(in_schema, LANGUAGE_FIELDS), ROUTED_FIELDS)
    rejected_schema = with_reasons(schema)
    stats = {main_asset: StageStats(), other_asset: StageStats()}
    with (
        storage.writer(main_asset, partition, schema, rejected_schema, provenance) as main_writer,
        storage.writer(other_asset, partition, schema, rejected_schema, provenance) as other_writer,
    ):
        for batch in storage.iter_batches(upstream, partition, batch_rows=batch_rows):
            if not has_labels:
                batch = label_batch(batch, label_params)
            routed = filter_by_language(batch, routing, base)
            main_writer.write(routed.main.kept, routed.main.rejected)
            other_writer.write(routed.other.kept, routed.other.rejected)
            stats[main_asset].observe(routed.main_input, routed.main)
            stats[other_asset].observe(routed.other_input, routed.other)
    seconds = time.perf_counter() - started
    runs = []
    for asset, writer in ((main_asset, main_writer), (other_asset, other_writer)):
        runs.append(
            StageRun(asset, partition, writer.path, writer.rejected_path, seconds, stats[asset], schema)
        )
    return runs[0], runs[1]
