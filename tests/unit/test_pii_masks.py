"""PII candidate masks in two levels (any kind first, then each kind on the hits) equal one scan per kind."""

import pyarrow as pa
import pyarrow.compute as pc

from refinery.clean.pii import PII_KINDS, candidate_masks, candidates
from tests.unit.real_text import real_documents
from tests.unit.test_clean_batch import PII_CASES


def test_two_level_masks_equal_one_scan_per_kind():
    docs = [*real_documents(40), *PII_CASES, ""]
    lines = pa.array([line for doc in docs for line in doc.split("\n")], pa.large_string())
    for arr in (pa.array(docs, pa.large_string()), lines):
        for kinds in (set(PII_KINDS), {"phone"}, {"email", "credit_card"}):
            masks = candidate_masks(arr, kinds)
            assert list(masks) == [k for k in PII_KINDS if k in kinds]
            for kind, mask in masks.items():
                assert mask.tolist() == pc.match_substring_regex(arr, candidates()[kind]).to_pylist(), kind
    assert candidate_masks(pa.array(["no pii"]), set()) == {}
