"""Keyframe selection with controlled embeddings: the frames that match the query are chosen, no two
picks are closer than the gap, and the result is exactly what greedy temporal NMS defines."""

import numpy as np
import pytest

from refinery.multimodal.keyframes import candidate_indices, select_keyframes, uniform_indices


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def controlled_video(seconds: int = 60, match: tuple[int, int] = (20, 30), dim: int = 16, seed: int = 0):
    """One candidate per second; frames in ``match`` lean towards the query, the others do not."""
    rng = np.random.default_rng(seed)
    query = unit(rng.normal(size=dim))
    other = unit(rng.normal(size=(seconds, dim)))
    other -= (other @ query)[:, None] * query  # orthogonal to the query: cosine 0
    frames = unit(other)
    strength = np.zeros(seconds)
    lo, hi = match
    strength[lo:hi] = rng.uniform(0.6, 0.95, size=hi - lo)
    frames = unit(frames * np.sqrt(1 - strength[:, None] ** 2) + strength[:, None] * query)
    return frames, query, np.arange(seconds, dtype=float)


def test_frames_matching_the_query_are_chosen_with_the_gap_respected():
    frames, query, times = controlled_video()
    scores = frames @ query
    picked = select_keyframes(scores, times, k=4, min_gap=2.0)
    assert len(picked) == 4
    assert all(20 <= times[p] < 30 for p in picked)  # only the matching stretch
    assert np.all(np.diff(times[picked]) >= 2.0)  # the gap, in time order
    assert picked[0] != picked[-1] and list(picked) == sorted(picked, key=lambda p: times[p])
    assert int(np.argmax(scores)) in picked  # the best frame is always among them


def test_without_a_gap_the_picks_are_the_plain_top_k():
    frames, query, times = controlled_video(seed=3)
    scores = frames @ query
    picked = select_keyframes(scores, times, k=5, min_gap=0.0)
    assert sorted(picked.tolist()) == sorted(np.argsort(-scores)[:5].tolist())


def test_a_wide_gap_spreads_picks_over_the_stretch_and_then_outside_it():
    frames, query, times = controlled_video(match=(20, 30), seed=5)
    scores = frames @ query
    picked = select_keyframes(scores, times, k=4, min_gap=4.0)
    inside = [p for p in picked if 20 <= times[p] < 30]
    assert len(inside) == 3  # a 10 s stretch holds at most three picks 4 s apart…
    assert len(picked) == 4  # …so the fourth comes from elsewhere, still ≥ 4 s from the others
    assert np.all(np.diff(np.sort(times[picked])) >= 4.0)


def test_short_videos_get_fewer_frames_than_k():
    times = np.arange(5, dtype=float)
    picked = select_keyframes(np.linspace(0, 1, 5), times, k=8, min_gap=2.0)
    assert times[picked].tolist() == [0.0, 2.0, 4.0]


def test_ties_and_unscorable_candidates():
    times = np.arange(6, dtype=float)
    scores = np.array([0.5, 0.9, 0.9, -np.inf, np.nan, 0.1])
    picked = select_keyframes(scores, times, k=6, min_gap=0.0)
    assert picked.tolist() == [0, 1, 2, 5]  # -inf and NaN are never picked
    tied = select_keyframes(scores, times, k=1, min_gap=0.0)
    assert tied.tolist() == [1]  # of equal scores, the earlier frame


@pytest.mark.parametrize("seed", range(20))
def test_greedy_nms_definition_holds_for_random_scores(seed):
    """Every candidate left out is suppressed by a pick at least as good within the gap, or the k picks
    are all at least as good as it."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    times = np.sort(rng.uniform(0, 120, size=n))
    scores = rng.normal(size=n)
    k, gap = int(rng.integers(1, 10)), float(rng.uniform(0, 15))
    picked = select_keyframes(scores, times, k, gap)
    chosen = set(picked.tolist())
    assert len(picked) <= k
    for a in picked:
        for b in picked:
            assert a == b or abs(times[a] - times[b]) >= gap - 1e-9
    for c in set(range(n)) - chosen:
        suppressed = any(abs(times[p] - times[c]) < gap and scores[p] >= scores[c] for p in picked)
        crowded_out = len(picked) == k and min(scores[p] for p in picked) >= scores[c]
        assert suppressed or crowded_out


def test_candidate_indices_follow_the_stride_and_never_cover_every_frame():
    idx = candidate_indices(frames=3600, fps=30.0, sample_fps=1.0, max_candidates=1000)
    assert len(idx) == 120 and idx[0] == 0 and set(np.diff(idx)) == {30}
    every = candidate_indices(frames=90, fps=30.0, sample_fps=30.0, max_candidates=1000)  # at the frame rate
    assert every.tolist() == list(range(90))
    capped = candidate_indices(frames=30 * 3600, fps=30.0, sample_fps=1.0, max_candidates=500)
    assert len(capped) == 500 and capped[0] == 0 and capped[-1] == 30 * 3600 - 1
    odd = candidate_indices(frames=100, fps=29.97, sample_fps=2.0, max_candidates=1000)
    assert odd[-1] < 100 and np.all(np.diff(odd) >= 14) and len(odd) == 7
    assert len(candidate_indices(0, 30.0, 1.0, 10)) == 0


def test_uniform_indices_are_slice_centres():
    assert uniform_indices(120, 4).tolist() == [15, 45, 75, 105]
    assert uniform_indices(3, 8).tolist() == [0, 1, 2]  # fewer frames than k
    assert len(uniform_indices(0, 4)) == 0
