"""The adaptive (online DoReMi) stream over packed sequences: every slot once across ranks and
workers, each domain's sequences in order without repeats until it is exhausted, the weights
followed, and a resume that reproduces the tail."""

import numpy as np
import pytest

from refinery.schedule.adaptive import AdaptiveParams
from refinery.tokens.adaptive import AdaptiveTokenReader, online_doremi, sequence_domains
from refinery.tokens.loader import TokenLoaderError, TokenShards, read_index
from refinery.tokens.publish import TrainingTokensParams, publish_training_tokens
from tests.unit.token_helpers import build_home

STEPS = 30


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Shards of 4 sequences per step (2 ranks × micro-batch 2) and a weight log in which books'
    sequences always lose more than web's."""
    tmp = tmp_path_factory.mktemp("adaptive")
    _, storage, _ = build_home(tmp)
    params = TrainingTokensParams(seq_len=63, micro_batch_size=2, data_parallel_size=2, shard_sequences=5)
    publish_training_tokens(storage, params, {})
    root = storage.table_path("training_tokens").parent
    names, codes, _ = sequence_domains(root)
    books = names.index("books")
    for rank in (0, 1):  # one log per rank; under DDP the all-reduce makes them agree, as here
        with online_doremi(root, "train", tmp / "feedback", AdaptiveParams(lag=0), rank=rank) as rule:
            for step in range(STEPS):
                rule.observe([books, 1 - books], [4.0, 1.0])
                rule.end_step(step)
    return root, tmp / "feedback", names, codes


def stream(root, feedback, rank, workers=2, start_step=0):
    per_worker = [
        list(
            AdaptiveTokenReader(
                root, "train", feedback, rank, 2, 2, start_step, worker=w, num_workers=workers, steps=STEPS
            )
        )
        for w in range(workers)
    ]
    return [b[j] for j in range(max(map(len, per_worker))) for b in per_worker if j < len(b)]


def test_every_slot_once_domains_in_order_weights_followed(recorded):
    root, feedback, names, codes = recorded
    index = read_index(root)
    shards = TokenShards(root, "train", index)
    slots, by_domain = [], {}
    for rank in (0, 1):
        batches = stream(root, feedback, rank)
        assert len(batches) == STEPS  # m = 2 sequences per rank per step, batches of 2
        for b in batches:
            assert np.array_equal(b["input_ids"], shards.take(b["sequence"])[:, :-1])
            assert np.array_equal(b["domain"], codes[b["sequence"]])  # each sequence's own domain
            slots += b["slot"].tolist()
            for slot, d, seq, ep in zip(
                b["slot"], b["domain"], b["sequence"], b["domain_epoch"], strict=True
            ):
                by_domain.setdefault(int(d), []).append((int(slot), int(seq), int(ep)))
    assert sorted(slots) == list(range(STEPS * 4))
    for d, got in by_domain.items():
        got.sort()
        own = np.flatnonzero(codes == d)
        expect = [int(own[i % len(own)]) for i in range(len(got))]
        assert [s for _, s, _ in got] == expect  # in training order, a new pass only once exhausted
        assert [e for _, _, e in got] == [i // len(own) for i in range(len(got))]
    books = names.index("books")
    share = np.bincount([d for d, g in by_domain.items() for _ in g], minlength=2)
    natural = (codes == books).mean()
    assert share[books] / share.sum() > natural + 0.1  # the loop's losses moved weight to books


def test_resume_reproduces_the_tail_and_mismatched_logs_are_refused(recorded, tmp_path):
    root, feedback, _, _ = recorded
    whole = stream(root, feedback, 1)
    tail = stream(root, feedback, 1, start_step=12)
    assert [b["slot"].tolist() for b in tail] == [b["slot"].tolist() for b in whole if b["step"][0] >= 12]
    with pytest.raises(TokenLoaderError, match="batch size"):
        AdaptiveTokenReader(root, "train", feedback, 0, 2, batch_size=3)


def test_token_dataset_follows_the_log(recorded):
    pytest.importorskip("torch")
    from refinery.tokens.dataset import TokenDataset

    root, feedback, _, _ = recorded
    ds = TokenDataset(root, batch_size=2, rank=0, world_size=2, feedback=feedback, steps=STEPS)
    got = [b["slot"].tolist() for b in ds.loader(num_workers=0)]
    assert len(got) == len(ds) == STEPS
    assert got == [b["slot"].tolist() for b in stream(root, feedback, 0, workers=1)]
