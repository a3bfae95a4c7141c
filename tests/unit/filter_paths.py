"""The heuristic chain's batch path held against its per-document list path (``evaluate`` without
counts): the same kept texts, reasons and scores. Shared by the word-count and kernel tests."""

import pandas as pd
import pytest

from refinery.filters.chain import evaluate, filter_batch
from refinery.filters.params import HeuristicParams


def assert_filter_batch_equals_the_list_path(docs: list[str], params: HeuristicParams) -> None:
    result = filter_batch(pd.DataFrame({"id": range(len(docs)), "text": docs}), params)
    got = {
        **{row.id: (None, row.text) for row in result.kept.itertuples()},
        **{row.id: ((row.reason, row.reason_detail), None) for row in result.rejected.itertuples()},
    }
    scores = pd.concat([result.kept, result.rejected]).set_index("id")
    for i, text in enumerate(docs):
        verdict, want_scores, kept_text = evaluate(text, params)  # no counts: the list path
        assert got[i] == (verdict, None if verdict else kept_text), text[:80]
        for name, value in want_scores.items():
            assert scores.at[i, name] == pytest.approx(value, rel=1e-6), (name, text[:80])
