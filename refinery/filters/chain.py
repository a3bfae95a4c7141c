"""The heuristic rule chain, language-agnostic rules first, then the English ones.

Order: Gopher quality (shape: length, word length, symbols, bullets, ellipses, alphabetic
words) → Gopher repetition → language gate → Gopher stop words → C4. Rules that hold in any
language decide first, so spam is rejected for what it is; the gate then makes the English
assumption explicit before the rules that depend on it.

The first failed rule names the rejection. Scores of every family that ran are kept as columns
(so kept documents carry all of them, and SQL can slice any threshold afterwards); families
after the failing one did not run, and their columns are null for that row.

Each rule is a unit in ``refinery/filters/rules/`` (:class:`refinery.filters.rule.Rule`); the chain
is built from the rules found there (:func:`registered_rules`), and its parameter model
(``HeuristicParams``), columns and ``disabled_rules`` codes come from what they declare.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, create_model

from refinery.batch import BatchResult, split_batch
from refinery.filters.rule import ChainParams, Document, Rule, Verdict
from refinery.text.kernels.doc_counts import batch_counts
from refinery.text.kernels.utf8 import large_strings
from refinery.text.word_counts import DocCounts, word_counts

RULES_PACKAGE = "refinery.filters.rules"


def registered_rules(package: str = RULES_PACKAGE) -> list[type[Rule]]:
    """Every :class:`Rule` subclass defined in a module of ``package``, in module-name order."""
    found: list[type[Rule]] = []
    for info in sorted(pkgutil.iter_modules(importlib.import_module(package).__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package}.{info.name}")
        found += [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Rule) and obj.__module__ == module.__name__
        ]
    return found


class RuleChain:
    """Rules in run order, and what they declare put together: the parameter model, the score
    columns (int32 ones first, then float32, each in the rules' ``listed_at`` order) and the reason
    codes that ``disabled_rules`` accepts."""

    def __init__(
        self,
        rules: Iterable[type[Rule]],
        params_name: str = "HeuristicParams",
        params_module: str | None = None,
    ):
        self.rules: tuple[type[Rule], ...] = tuple(sorted(rules, key=lambda r: r.position))
        listed = sorted(self.rules, key=lambda r: r.listing_key())
        _check_unique("rule name", [r.name for r in self.rules])
        _check_unique("rule position", [r.position for r in self.rules])
        self.int_scores = [c for r in listed for c in r.int_scores]
        self.float_scores = [c for r in listed for c in r.float_scores]
        _check_unique("score column", self.int_scores + self.float_scores)
        self.switches = {code: switch for r in listed for code, switch in r.reasons.items()}
        _check_unique("reason code", [code for r in listed for code in r.reasons])
        self.params: type[ChainParams] = _params_model(listed, params_name, params_module)
        self.params.rule_switches = self.switches
        self.fields = [pa.field(c, pa.int32()) for c in self.int_scores] + [
            pa.field(c, pa.float32()) for c in self.float_scores
        ]
        self._check_parameters()

    def active(self, p: BaseModel) -> list[type[Rule]]:
        """The rules whose switch is on, in run order."""
        return [r for r in self.rules if getattr(p, r.switch)]

    def evaluate(
        self, text: str, p: BaseModel, char_counts: tuple[int, int] | DocCounts | None = None
    ) -> tuple[Verdict, dict, str]:
        """Run the chain on one document: (first failure or None, scores, text to keep).

        ``char_counts``: the text's counts, as :func:`word_counts` gives them for a batch, or its
        (word characters, other non-space characters) (see :class:`Document`)."""
        return run_rules(self.active(p), text, p, char_counts)

    def filter_batch(self, frame: pd.DataFrame, params: BaseModel) -> BatchResult:
        """:meth:`evaluate` on every document of the batch: a column per score, a reason per
        rejected row.

        When the first rule has a batch form (:attr:`Rule.check_batch`: Gopher quality) and the
        compiled pass can count the texts, that rule runs on the whole batch from the counts, and
        the other rules, with a Python string of the text, only on the documents it passes (on real
        corpora it rejects most of them); else every rule runs per document (:meth:`filter_each`).
        The results are the same."""
        rules = self.active(params)
        arr = large_strings(frame["text"])
        batchable = bool(len(frame)) and arr is not None and len(arr) == len(frame)
        if not (batchable and rules and rules[0].check_batch is not None):
            return self._each(frame, params, rules, arr)
        return self._first_in_batch(frame, params, rules, arr)

    def _first_in_batch(
        self, frame: pd.DataFrame, params: BaseModel, rules: list[type[Rule]], arr: pa.Array
    ) -> BatchResult:
        """:meth:`filter_batch` with ``rules[0]`` run on the whole batch (``arr``: its texts)."""
        counts = batch_counts(arr, getattr(params, "bullet_prefixes", ()))
        first = rules[0].check_batch(counts, params)
        reasons = list(first.verdicts)
        passed = np.flatnonzero(first.passed)
        # the first rule's scores as it left them; the others null but where they run (below)
        columns: dict[str, list | np.ndarray] = {
            c: first.scores[c] if c in first.scores else [math.nan] * len(frame) for c in self._score_names
        }
        texts = frame["text"].iloc[passed].tolist()  # Python strings for the rest only
        kept_texts = []
        for row, text, row_counts in zip(passed.tolist(), texts, counts.rows(passed), strict=True):
            verdict, scores, kept_text = run_rules(rules[1:], text, params, row_counts)
            reasons[row] = verdict
            kept_texts.append(kept_text)
            for name, value in scores.items():
                columns[name][row] = value
        text = kept_text_column(frame["text"], texts, kept_texts, passed)
        return self._split(frame, text, columns, reasons)

    def filter_each(self, frame: pd.DataFrame, params: BaseModel) -> BatchResult:
        """:meth:`filter_batch` with every rule run per document, Gopher quality included: the
        path the batch path is held to (and the one taken where it does not apply)."""
        return self._each(frame, params, self.active(params), large_strings(frame["text"]))

    def _each(
        self, frame: pd.DataFrame, params: BaseModel, rules: list[type[Rule]], arr: pa.Array | None
    ) -> BatchResult:
        """:meth:`filter_each` (``arr``: the texts for the compiled pass, None where Arrow cannot
        hold them)."""
        reasons, kept_texts = [], []
        columns: dict[str, list] = {c: [] for c in self._score_names}
        texts = frame["text"].tolist()
        # Word and token counts for the whole batch at once: no word is listed for the documents
        # that Gopher quality rejects (most of them, on real corpora).
        for text, counts in zip(texts, batch_rows(arr, texts, params), strict=True):
            verdict, scores, kept_text = run_rules(rules, text, params, counts)
            reasons.append(verdict)
            kept_texts.append(kept_text)
            for name, values in columns.items():
                values.append(scores.get(name, math.nan))
        return self._split(frame, kept_text_column(frame["text"], texts, kept_texts), columns, reasons)

    @property
    def _score_names(self) -> list[str]:
        return self.int_scores + self.float_scores

    def _split(
        self, frame: pd.DataFrame, text: pd.Series | list[str], columns: dict, reasons: list[Verdict]
    ) -> BatchResult:
        """The batch with its kept texts and score columns (int scores as nullable Int32), split by
        ``reasons``."""
        out = frame.assign(text=text, **columns)
        for name in self.int_scores:
            out[name] = out[name].astype("Int32")
        return split_batch(out, reasons)

    def _check_parameters(self) -> None:
        """Every switch a rule names is a parameter of the model (a typo fails at import)."""
        fields = self.params.model_fields
        for rule in self.rules:
            named = [rule.switch, *(name for name, _ in rule.reasons.values())]
            named += [*rule.language_specific, *rule.counts_words]
            missing = sorted(set(named) - set(fields))
            if missing:
                raise ValueError(f"rule {rule.name!r} names parameters no rule declares: {missing}")


def batch_rows(arr: pa.Array | None, texts: list[str], params: BaseModel) -> list[DocCounts]:
    """Each document's counts for the rules: from the compiled pass over the texts' Arrow buffer
    ``arr`` (:func:`large_strings` of their column: words, and Gopher quality's '#', ellipsis and
    line counts; :mod:`refinery.text.kernels.doc_counts`), or, where Arrow cannot hold the texts (a
    lone surrogate: ``arr`` is None), from the numpy pass over the strings (:func:`word_counts`:
    words only)."""
    if arr is None or len(arr) != len(texts):
        return word_counts(texts).rows()
    return batch_counts(arr, getattr(params, "bullet_prefixes", ())).rows()


def kept_text_column(
    column: pd.Series, texts: list[str], kept: list[str], rows: np.ndarray | None = None
) -> pd.Series | list[str]:
    """The text column to write: ``kept`` (the texts of the rows ``rows`` of ``column``, every row
    when None; ``texts``: those rows as they came) as a new column holds it. Most rules keep a text
    as it came (the same object), so when the column already has the type a list of strings
    becomes, only the rewritten rows (C4's dropped lines) are set in a copy of it: the rest of the
    batch's text is not converted from Python strings again."""
    at = range(len(kept)) if rows is None else rows.tolist()
    rewritten = [(i, new) for i, new, old in zip(at, kept, texts, strict=True) if new is not old]
    if column.dtype == _STR_DTYPE and len(rewritten) <= len(column) // 2:
        column = column.copy()
        if rewritten:
            column.iloc[[i for i, _ in rewritten]] = [new for _, new in rewritten]
        return column
    if rows is None:
        return kept
    whole = column.tolist()
    for i, new in rewritten:
        whole[i] = new
    return whole


_STR_DTYPE = pd.Series(["text"]).dtype  # what a column built from a list of strings is


def run_rules(
    rules: Sequence[type[Rule]],
    text: str,
    p: BaseModel,
    char_counts: tuple[int, int] | DocCounts | None = None,
) -> tuple[Verdict, dict, str]:
    """The first failure among ``rules`` (in order), the scores of those that ran, and the text to
    keep: as it came in when a rule failed, else as the rules left it."""
    doc, scores = Document(text, char_counts), {}
    for rule in rules:
        if verdict := rule.check(doc, p, scores):
            return verdict, scores, text
    return None, scores, doc.text


def _params_model(listed: list[type[Rule]], name: str, module: str | None) -> type[ChainParams]:
    """One pydantic model with every rule's parameters, after ``language`` and ``disabled_rules``
    (pydantic lists the fields of the last base first, hence the reversal)."""
    models = list(dict.fromkeys(r.params for r in listed))
    declared: dict[str, str] = {}
    for model in models:
        own = set(model.model_fields) - set(ChainParams.model_fields)
        for field in own:
            if field in declared:
                raise ValueError(f"parameter {field!r} is declared by {declared[field]} and {model.__name__}")
            declared[field] = model.__name__
    bases = (*reversed(models), ChainParams)
    return create_model(name, __base__=bases, __module__=module or __name__)  # type: ignore[call-overload]


def _check_unique(what: str, values: list) -> None:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{what} declared twice in the heuristic rules: {repeated}")


CHAIN = RuleChain(registered_rules(), params_module="refinery.filters.params")

INT_SCORES = CHAIN.int_scores
FLOAT_SCORES = CHAIN.float_scores
SCORE_FIELDS = CHAIN.fields


def evaluate(
    text: str, p: BaseModel, char_counts: tuple[int, int] | DocCounts | None = None
) -> tuple[Verdict, dict, str]:
    """:meth:`RuleChain.evaluate` of the chain of ``refinery/filters/rules/``."""
    return CHAIN.evaluate(text, p, char_counts)


def filter_batch(frame: pd.DataFrame, params: BaseModel) -> BatchResult:
    """The heuristic_filtered processor: :func:`evaluate` on every document of the batch (the
    asset binds ``params=`` by keyword)."""
    return CHAIN.filter_batch(frame, params)
