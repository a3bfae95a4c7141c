"""PII candidate masks in two levels (any detector first, then each on the hits) equal one scan per
detector; each detector's candidate matches wherever it would replace something."""

import pyarrow as pa
import pyarrow.compute as pc

from refinery.clean.pii import DETECTORS, PII_KINDS, candidate_masks, candidates
from tests.unit.real_text import real_documents
from tests.unit.test_clean_batch import PII_CASES
from tests.unit.test_pii_lines import CHANGELOG


def test_two_level_masks_equal_one_scan_per_detector():
    docs = [*real_documents(40), *PII_CASES, ""]
    lines = pa.array([line for doc in docs for line in doc.split("\n")], pa.large_string())
    for arr in (pa.array(docs, pa.large_string()), lines):
        for kinds in (set(PII_KINDS), {"phone"}, {"email", "credit_card"}, {"ip"}):
            masks = candidate_masks(arr, kinds)
            assert list(masks) == [det.name for det in DETECTORS if det.kind in kinds]
            for name, mask in masks.items():
                assert mask.tolist() == pc.match_substring_regex(arr, candidates()[name]).to_pylist(), name
    assert candidate_masks(pa.array(["no pii"]), set()) == {}


def test_each_detector_replaces_only_where_its_candidate_does():
    """The batch path reads a line with a detector only where that detector's own candidate
    matches: wherever the detector's regex finds a match its validator accepts (what it would
    replace), its candidate must match too. IPv6's and the international phone form's candidates
    also leave out what the validators refuse (times such as 15:35:01, C++'s ns::name, time zones
    such as +0200): they match fewer lines than the regexes do."""
    lines = [line for doc in [*real_documents(), *PII_CASES, CHANGELOG] for line in doc.split("\n")]
    arr = pa.array(lines, pa.large_string())
    for det in DETECTORS:
        hit = pc.match_substring_regex(arr, candidates()[det.name]).to_pylist()
        replaced = [any(det.valid(m.group()) for m in det.pattern.finditer(line)) for line in lines]
        assert sum(replaced) > 0, det.name
        assert all(h for h, r in zip(hit, replaced, strict=True) if r), det.name
        if det.name in ("ipv6", "phone"):
            matched = sum(det.pattern.search(line) is not None for line in lines)
            assert sum(hit) < matched, det.name
