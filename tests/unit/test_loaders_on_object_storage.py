"""The training loaders read their shards through pyarrow.fs: the schedule's Parquet shards and the
packed tokens' Megatron shards, copied to an object store (moto's S3 server on loopback), stream the
same rows and batches as from the local folder, for every rank and worker."""

import numpy as np
import pyarrow.fs as pafs
import pytest

from refinery.fs import child, split_root
from refinery.schedule.adaptive import schedule_domains
from refinery.schedule.loader import ScheduleError, ScheduleReader
from refinery.tokens.loader import TokenLoaderError, TokenReader, read_index
from tests.s3_server import s3_credentials, s3_root
from tests.unit.test_loader import schedule
from tests.unit.test_tokens import home

fixtures = (s3_root, s3_credentials, schedule, home)  # used by name


def upload(local, s3_root: str, *parts: str) -> str:
    """``local`` copied under the bucket; the root URI of the copy."""
    remote = child(s3_root, *parts)
    filesystem, path = split_root(remote)
    pafs.copy_files(str(local), path, destination_filesystem=filesystem)
    return remote


def test_schedule_reader_over_s3_equals_local(schedule, s3_root):
    root, _ = schedule
    remote = upload(root, s3_root, "loader", "training_schedule")
    assert remote.startswith("s3://") and "endpoint_override" in remote
    for split, rank, world, batch, workers in (
        ("train", 0, 1, 1, 1),
        ("train", 1, 2, 3, 2),
        ("validation", 0, 1, 4, 1),
    ):
        for worker in range(workers):
            local = list(ScheduleReader(root, split, rank, world, batch, worker=worker, num_workers=workers))
            on_s3 = list(
                ScheduleReader(remote, split, rank, world, batch, worker=worker, num_workers=workers)
            )
            assert on_s3 == local and local
    names, counts, ident, per_step = schedule_domains(remote)
    local_names, local_counts, local_ident, local_step = schedule_domains(root)
    assert (names, ident, per_step) == (local_names, local_ident, local_step)
    assert np.array_equal(counts, local_counts)
    with pytest.raises(ScheduleError, match="materialize training_schedule"):
        ScheduleReader(child(s3_root, "nothing-here"), "train")


def test_token_reader_over_s3_equals_local(home, s3_root):
    root = home[3]
    remote = upload(root, s3_root, "loader", "training_tokens")
    assert read_index(remote) == read_index(root)
    for rank in (0, 1):
        for worker in (0, 1):
            local = list(TokenReader(root, "train", rank, 2, worker=worker, num_workers=2))
            on_s3 = list(TokenReader(remote, "train", rank, 2, worker=worker, num_workers=2))
            assert len(on_s3) == len(local) > 0
            for got, want in zip(on_s3, local, strict=True):
                assert got.keys() == want.keys()
                for key in want:
                    assert np.array_equal(got[key], want[key]), key
    with pytest.raises(TokenLoaderError, match="materialize training_tokens"):
        read_index(child(s3_root, "nothing-here"))
