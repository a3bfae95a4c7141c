"""The stage statistics' whitespace token count equals Arrow's ``utf8_split_whitespace`` lengths,
which it replaced (quirks included: empty strings for leading and trailing whitespace)."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refinery.stats import UNICODE_SPACES, whitespace_tokens
from tests.unit.real_text import real_documents


def arrow_counts(arr) -> np.ndarray:
    return pc.list_value_length(pc.utf8_split_whitespace(arr)).to_numpy(zero_copy_only=False).astype(np.int64)


def test_the_whitespace_list_is_python_and_arrow_whitespace():
    cps = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    python = {c for c in cps if chr(c).isspace()}
    lengths = arrow_counts(pa.array([f"a{chr(c)}a" for c in cps], pa.large_string()))
    arrow = {cps[i] for i in np.flatnonzero(lengths == 2)}
    assert set(map(ord, UNICODE_SPACES)) == python == arrow


def test_counts_equal_arrow_on_real_and_generated_text():
    rng = np.random.default_rng(3)
    alphabet = list("ab \n\t\x1c\u3000\u2003\x85\xa0é😀\u1680  ")
    generated = ["".join(rng.choice(alphabet, size=rng.integers(0, 9))) for _ in range(20_000)]
    docs = list(real_documents(40)) + generated + ["", " ", "  a  ", "a\u3000 "]
    for arr in (
        pa.array(docs, pa.large_string()),
        pa.array(docs, pa.string()),
        pa.array(docs, pa.large_string()).slice(7, 5_000),
        pa.chunked_array([pa.array(docs[:9], pa.large_string()), pa.array(docs[9:], pa.large_string())]),
        # long texts with the crafted ones among them: counted one text at a time (_true_per_text)
        pa.array(generated[:300] + docs[:40] + ["", " ", "  a  ", "a\u3000 "], pa.large_string()),
        # over the 256 KB runs the counts go in (_counts_in_slices), one text longer than a run
        pa.array([*generated, " x\u3000" * 60_000, *docs, *generated], pa.large_string()).slice(3),
    ):
        assert whitespace_tokens(arr).tolist() == arrow_counts(arr).tolist()
    assert whitespace_tokens(docs).tolist() == arrow_counts(pa.array(docs)).tolist()
    nulls = pa.array(["a b", None], pa.large_string())
    assert whitespace_tokens(nulls).tolist() == arrow_counts(nulls).tolist()
    assert whitespace_tokens(pa.array([], pa.large_string())).tolist() == []
