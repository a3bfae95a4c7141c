"""filter_batch's text column: only rewritten rows are set, the column equals the list it replaces."""

import pandas as pd

from refinery.filters.chain import kept_text_column


def test_kept_text_equals_a_column_built_from_the_list():
    texts = ["keep me", "drop a line\nok.", "é as it came", "x"]
    kept = [texts[0], "ok.", texts[2], texts[3]]  # one rewritten row, the rest the same objects
    for column in (pd.Series(texts), pd.Series(texts, dtype=object)):
        got = pd.DataFrame({"text": column}).assign(text=kept_text_column(column, texts, kept))
        pd.testing.assert_frame_equal(got, pd.DataFrame({"text": column}).assign(text=kept))
    untouched = pd.Series(texts)
    assert kept_text_column(untouched, texts, list(texts)).tolist() == texts
