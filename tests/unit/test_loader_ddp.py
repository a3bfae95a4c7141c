"""The loader's training-time defaults: every DDP rank gets the same number of batches (the last
step padded, pads flagged, real documents still exactly once), and a DataLoader that would
re-batch the dataset's batches is refused."""

import itertools

import pytest

from refinery.schedule.loader import ScheduleError, ScheduleReader
from tests.unit.schedule_helpers import mixed_domains, write_schedule

N, G, RANKS = 1_000, 64, 8  # the case: 15 full steps and one of 40 documents

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def schedule(tmp_path_factory):
    domains = mixed_domains(N, {"web": 0.5, "books": 0.3, "code": 0.2})
    return write_schedule(tmp_path_factory.mktemp("ddp"), domains, G, shard_docs=300, row_group_docs=50)


def batches_of(stream: list, b: int) -> list[list]:
    return [stream[i : i + b] for i in range(0, len(stream), b)]


def round_robin(per_worker: list[list[list]]) -> list[list]:
    """What a DataLoader (batch_size=None) yields from per-worker batch lists: one from each in turn."""
    return [b for group in itertools.zip_longest(*per_worker) for b in group if b is not None]


def test_uneven_reproduces_the_hang_the_default_prevents(schedule):
    uneven = [
        ScheduleReader(schedule, "train", r, RANKS, 8, last_step="uneven").num_batches() for r in range(8)
    ]
    assert uneven == [16] * 5 + [15] * 3  # the issue: ranks 5–7 would leave the last collective hanging
    assert [ScheduleReader(schedule, "train", r, RANKS, 8).num_batches() for r in range(8)] == [16] * 8
    assert [
        ScheduleReader(schedule, "train", r, RANKS, 8, last_step="drop").num_batches() for r in range(8)
    ] == [15] * 8


@pytest.mark.parametrize(("batch", "workers"), [(8, 1), (8, 3), (3, 2), (5, 4)])
def test_pad_gives_every_rank_the_same_batches_and_real_documents_once(schedule, batch, workers):
    real, pads, counts = [], [], []
    for rank in range(RANKS):
        per_worker = [
            list(
                ScheduleReader(schedule, "train", rank, RANKS, batch, worker=w, num_workers=workers).batches()
            )
            for w in range(workers)
        ]
        got = round_robin(per_worker)
        whole = list(ScheduleReader(schedule, "train", rank, RANKS, batch))
        assert [r["position"] for b in got for r in b] == [r["position"] for r in whole]  # order kept
        assert got == batches_of(whole, batch)
        counts.append(len(got))
        assert ScheduleReader(schedule, "train", rank, RANKS, batch).num_batches() == len(got)
        for row in whole:
            (pads if row["is_pad"] else real).append(row)
    assert len(set(counts)) == 1 and counts[0] == -(-(16 * 8) // batch)
    assert sorted(r["position"] for r in real) == list(range(N))  # exactly once, nothing dropped
    # 24 pads, all in the last step, in ranks 5–7's slices, at virtual positions no document has
    assert sorted(r["position"] for r in pads) == list(range(N, 15 * G + G))
    assert {r["step"] for r in pads} == {15} and {(r["position"] % G) // 8 for r in pads} == {5, 6, 7}
    for r in pads:  # a copy of a real document: a loop that forgets the flag still trains on text
        assert r["text"] == f"{r['domain']} doc {(r['position'] - N) % N}"


def test_torch_dataloaders_of_eight_ranks_with_workers(schedule):
    from refinery.schedule.loader import ScheduleDataset

    real, lengths = [], set()
    for rank in range(RANKS):
        ds = ScheduleDataset(schedule, "train", batch_size=8, rank=rank, world_size=RANKS)
        batches = list(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=3))
        assert len(batches) == len(ds) == 16
        lengths.add(len(batches))
        flat = [(int(p), bool(f)) for b in batches for p, f in zip(b["position"], b["is_pad"], strict=True)]
        assert [p for p, _ in flat] == [
            r["position"] for r in ScheduleReader(schedule, "train", rank, RANKS, 8)
        ]
        assert all(b["is_pad"].dtype == torch.bool for b in batches)
        real += [p for p, pad in flat if not pad]
    assert lengths == {16} and sorted(real) == list(range(N))


def test_one_rank_is_never_padded(schedule):
    rows = list(ScheduleReader(schedule, "train", batch_size=64))
    assert [r["position"] for r in rows] == list(range(N)) and not any(r["is_pad"] for r in rows)


@pytest.fixture(scope="module")
def dataset(schedule):
    from refinery.schedule.loader import ScheduleDataset

    return ScheduleDataset(
        schedule, "train", batch_size=4, rank=1, world_size=2, columns=["position", "text"]
    )


def first_batch_error(loader) -> str:
    """The message of the ScheduleError that the loader's first batch raises. The exception's
    traceback holds the iterator in a reference cycle (torch re-raises a worker's error from a
    frame that keeps it), and torch's worker shutdown, run later from inside a garbage collection
    (in some other test), waits 5 s per worker; with the traceback dropped, the iterator is freed,
    and its workers stopped, when this returns."""
    batches = iter(loader)
    try:
        next(batches)
    except ScheduleError as err:
        err.__traceback__ = None
        return str(err)
    pytest.fail("the first batch was served")


# Module-level functions, not lambdas: the workers start from the suite's forkserver (see
# tests/conftest.py), so what the DataLoader and the dataset hold is pickled.
def _rows_unchanged(rows):
    return rows


def _text_length_mapping(row):
    return {"n": len(row["text"])}


def _text_length(row):
    return len(row["text"])


@pytest.mark.parametrize(
    ("options", "workers"),
    [
        ({"batch_size": 4}, 0),
        ({"batch_size": 5}, 1),
        ({}, 0),
        ({"batch_size": 4, "collate_fn": _rows_unchanged}, 0),
        ({"batch_size": 2, "collate_fn": _rows_unchanged}, 1),
    ],
    ids=["same-size", "other-size-worker", "default-size-1", "custom-collate", "custom-collate-worker"],
)
def test_a_dataloader_that_batches_again_is_refused(dataset, options, workers):
    """Refused in the main process and in a worker process."""
    loader = torch.utils.data.DataLoader(dataset, num_workers=workers, **options)
    assert "batch_size=None" in first_batch_error(loader)


def test_a_dataloader_that_reorders_the_batches_is_refused(dataset):
    """The dataset splits ranks and workers itself, so a sampler's order is refused, not followed."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=True, num_workers=0)
    torch.manual_seed(3)  # a permutation whose first index is not 0
    with pytest.raises(ScheduleError, match="serves its batches in order"):
        list(loader)


def test_every_epoch_starts_the_stream_again(dataset):
    """Asking for a worker's first batch again (a new epoch, persistent workers or a plain loop)
    restarts that worker's stream."""
    loader = dataset.loader(num_workers=2, persistent_workers=True)
    epochs = [[int(p) for b in loader for p in b["position"]] for _ in range(2)]
    assert epochs[0] == epochs[1] == [int(p) for b in dataset for p in b["position"]]
    assert [int(p) for p in dataset[0]["position"]] == epochs[0][:4]


def test_the_dataset_loader_keeps_the_order_with_workers(dataset, schedule):
    expected = [r["position"] for r in ScheduleReader(schedule, "train", 1, 2, 4)]
    for workers in (0, 3):
        batches = list(dataset.loader(num_workers=workers))
        assert [int(p) for b in batches for p in b["position"]] == expected
        assert all(len(b["text"]) == 4 for b in batches[:-1])
    with pytest.raises(ScheduleError, match="batch_size belongs to ScheduleDataset"):
        dataset.loader(num_workers=2, batch_size=4)


def test_transform_and_collate_must_give_mappings_and_keep_the_pad_flag(schedule):
    from refinery.schedule.loader import ScheduleDataset

    ds = ScheduleDataset(
        schedule, "train", batch_size=8, rank=7, world_size=RANKS, transform=_text_length_mapping
    )
    last = list(ds.loader(num_workers=2))[-1]
    assert set(last) == {"n", "is_pad"} and last["is_pad"].all()  # rank 7's last step is all pads
    bad = ScheduleDataset(schedule, "train", batch_size=8, transform=_text_length)
    assert "must produce a mapping" in first_batch_error(bad.loader())
