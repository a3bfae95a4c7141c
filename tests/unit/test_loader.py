"""The schedule loader: every position exactly once across ranks and DataLoader workers, in the
manifest's order, resumable from a step; shards that do not belong together are refused."""

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.schedule.loader import ScheduleError, ScheduleReader
from refinery.schedule.shards import write_shards
from refinery.storage import Storage

G = 8  # docs_per_step
TRAIN = 157  # not a multiple of G: the last step is short


@pytest.fixture(scope="module")
def schedule(tmp_path_factory):
    """Two corpus sources and a manifest that repeats some documents, written as shards."""
    root = tmp_path_factory.mktemp("sched")
    storage = Storage(root / "storage")
    for source in ("s1", "s2"):
        path = storage.path("pretrain_corpus", source)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.table(
                {
                    "id": [f"{source}-{i}" for i in range(100)],
                    "text": [f"text of {source} number {i}" for i in range(100)],
                    "source": [source] * 100,
                }
            ),
            path,
        )
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", TRAIN), ("validation", 20)):
        for p in range(n):
            source = "s1" if rng.random() < 0.5 else "s2"
            rows.append(
                {
                    "split": split,
                    "position": p,
                    "step": p // G,
                    "phase": 0,
                    "shard": p // 40,
                    "domain": source,
                    "source": source,
                    "id": f"{source}-{int(rng.integers(100))}",
                    "epoch": 0,
                    "replay": False,
                    "tokens": 5,
                    "difficulty": None,
                }
            )
    manifest = pa.Table.from_pylist(rows)
    out = root / "storage" / "training_schedule"
    out.mkdir(parents=True)
    write_shards(
        storage,
        manifest,
        out,
        docs_per_step=G,
        shard_docs=40,
        row_group_docs=5,
        split_names=["train", "validation", "test"],
    )
    return out, manifest.to_pandas()


def positions(reader) -> list[int]:
    return [r["position"] for r in reader]


def round_robin(streams: list[list[int]], batch: int) -> list[int]:
    """What a DataLoader yields from per-worker streams: batch from worker 0, 1, …, repeat."""
    batches = [[s[i : i + batch] for i in range(0, len(s), batch)] for s in streams]
    out = []
    for group in itertools.zip_longest(*batches):
        for b in group:
            out.extend(b or [])
    return out


def test_single_reader_delivers_the_manifest_in_order(schedule):
    root, manifest = schedule
    train = manifest[manifest["split"] == "train"]
    rows = list(ScheduleReader(root, "train"))
    assert [(r["source"], r["id"]) for r in rows] == list(zip(train["source"], train["id"], strict=True))
    assert [r["step"] for r in rows] == [p // G for p in range(TRAIN)]
    assert all(r["text"] == f"text of {r['source']} number {r['id'].split('-')[1]}" for r in rows)
    assert positions(ScheduleReader(root, "validation")) == list(range(20))


@pytest.mark.parametrize(
    ("world", "workers", "batch"), [(1, 1, 1), (1, 3, 2), (2, 2, 3), (4, 3, 1), (8, 2, 4)]
)
def test_exactly_once_across_ranks_and_workers(schedule, world, workers, batch):
    root, _ = schedule
    seen = []
    for rank in range(world):
        streams = [
            positions(ScheduleReader(root, "train", rank, world, batch, worker=w, num_workers=workers))
            for w in range(workers)
        ]
        rank_stream = positions(ScheduleReader(root, "train", rank, world, batch))
        assert round_robin(streams, batch) == rank_stream  # the DataLoader sees the rank's stream in order
        assert rank_stream == sorted(rank_stream)
        m = G // world
        assert all((p % G) // m == rank for p in rank_stream)  # the rank's slice of every step
        assert ScheduleReader(root, "train", rank, world).rank_count() == len(rank_stream)
        seen += rank_stream
    real = sorted(p for p in seen if p < TRAIN)  # positions ≥ TRAIN are pads (the default last_step)
    assert real == list(range(TRAIN))  # every position once: no loss, no duplicate


@pytest.mark.parametrize(("world", "start"), [(1, 5), (2, 3), (4, 19), (2, 25)])
def test_resume_from_a_step_is_the_tail_of_the_full_run(schedule, world, start):
    root, _ = schedule
    for rank in range(world):
        full = positions(ScheduleReader(root, "train", rank, world, 2))
        resumed = positions(ScheduleReader(root, "train", rank, world, 2, start_step=start))
        assert resumed == [p for p in full if p >= start * G]
        streams = [
            positions(
                ScheduleReader(root, "train", rank, world, 2, start_step=start, worker=w, num_workers=3)
            )
            for w in range(3)
        ]
        assert round_robin(streams, 2) == resumed


def test_drop_last_step_equalises_ranks(schedule):
    root, _ = schedule
    counts = [len(list(ScheduleReader(root, "train", r, 4, last_step="drop"))) for r in range(4)]
    assert len(set(counts)) == 1 and sum(counts) == (TRAIN // G) * G
    uneven = [ScheduleReader(root, "train", r, 4, last_step="uneven").rank_count() for r in range(4)]
    assert sum(uneven) == TRAIN and max(uneven) - min(uneven) <= G // 4


def test_torch_dataloader_with_worker_processes_keeps_order(schedule):
    torch = pytest.importorskip("torch")
    from refinery.schedule.loader import ScheduleDataset

    root, _ = schedule
    got = []
    for rank in range(2):
        ds = ScheduleDataset(
            root, "train", batch_size=3, rank=rank, world_size=2, columns=["position", "text"]
        )
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
        batches = list(loader)
        stream = [int(p) for batch in batches for p in batch["position"]]
        assert stream == positions(ScheduleReader(root, "train", rank, 2, 3))
        assert len(ds) == len(batches) and ds.num_documents == len(stream)
        got += [
            p
            for batch in batches
            for p, pad in zip(batch["position"], batch["is_pad"], strict=True)
            if not pad
        ]
        resumed = torch.utils.data.DataLoader(
            ScheduleDataset(root, "train", batch_size=3, start_step=10, rank=rank, world_size=2),
            batch_size=None,
            num_workers=2,
        )
        assert [int(p) for b in resumed for p in b["position"]] == [p for p in stream if p >= 10 * G]
    assert sorted(got) == list(range(TRAIN))


def test_refuses_bad_worlds_and_broken_shard_sets(schedule, tmp_path):
    root, _ = schedule
    with pytest.raises(ScheduleError, match="not divisible"):
        ScheduleReader(root, "train", 0, 3)
    with pytest.raises(ScheduleError, match="not in a world"):
        ScheduleReader(root, "train", 2, 2)
    broken = tmp_path / "copy"
    (broken / "shards" / "train").mkdir(parents=True)
    (broken / "shards" / "index.json").write_bytes((root / "shards" / "index.json").read_bytes())
    files = sorted((root / "shards" / "train").glob("*.parquet"))
    for f in files[:1] + files[2:]:  # the second shard is missing
        (broken / "shards" / "train" / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ScheduleError, match="missing"):
        ScheduleReader(broken, "train")
    with pytest.raises(ScheduleError, match="materialize training_schedule"):
        ScheduleReader(tmp_path / "nothing", "train")
    assert list(ScheduleReader(root, "test")) == []  # a split without documents is empty, not an error
    with pytest.raises(ScheduleError, match="no split 'trian'"):
        ScheduleReader(root, "trian")
