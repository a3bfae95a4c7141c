"""MinHash on real text: the batched simplification of non-ASCII documents (one code-point table
over the batch's bytes) equals :func:`simplify` word for word, and signatures equal datasketch's."""

import numpy as np
import pytest
from datasketch import MinHash

from refinery.dedup.minhash import _TABLE, MinHasher, shingle_hash, shingles, simplified_utf8
from refinery.text.words import simplify
from tests.unit.real_text import real_documents

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CRAFTED = [
    "Ünïcödé ÀÉÎÕÜ İstanbul ǅ ﬁ Straße ½ ٣٤ ۵ x² ⅻ",
    "ＦＵＬＬ ｗｉｄｔｈ ﾀｰﾝ 한국어 텍스트 日本語のテキスト",
    "e\u0301 combining e\u0301\u0301 e\u0308\u0323 Thai ภาษาไทย Devanagari हिन्दी",
    "_under_score_ 3.14 ٣.١٤ ‘quotes’ — dashes – and ‐ hyphens",
    "astral 𝒥ohn ℋancock 😀 𐐀𐐨 (Deseret upper/lower) 𝟘𝟙 (math digits) 🖕",
    "ΣΊΣΥΦΟΣ final sigma, ΌΣΟΣ",
    "lone \ud800 surrogate and pair \ud83d\ude00",
    "İİİ",
    "",
    "ascii only, five words here and more",
]


@pytest.fixture(scope="module")
def documents():
    return list(real_documents()) + CRAFTED


def test_simplified_words_equal_simplify(documents):
    for text, data in zip(documents, simplified_utf8(documents), strict=True):
        # ASCII bytes are lowercased, zeroed or blanked later by the byte table, in every document
        mapped = _TABLE[np.frombuffer(data, dtype=np.uint8)].tobytes()
        assert mapped.decode("utf-8", "surrogatepass").split() == simplify(text).split(), text[:60]


def test_signatures_equal_datasketch_on_real_documents(documents):
    hasher = MinHasher(num_perm=32, ngram=5, seed=1)
    chosen = [d for d in documents if not d.isascii()][:25] + CRAFTED
    for text, sig in zip(chosen, hasher.signatures(chosen), strict=True):
        ref = MinHash(num_perm=32, seed=1, hashfunc=shingle_hash)
        ref.update_batch(shingles(text, 5))
        assert np.array_equal(ref.hashvalues, sig), text[:60]


def test_batch_and_one_by_one_agree(documents):
    """Block boundaries (fixed shingle blocks across documents) do not change any signature."""
    hasher = MinHasher(num_perm=64, ngram=5, seed=1)
    together = hasher.signatures(documents)
    alone = np.vstack([hasher.signatures([d]) for d in documents[::9]])
    assert np.array_equal(together[::9], alone)
