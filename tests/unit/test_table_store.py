"""refinery.table_store's commit of a folder of shards on an object store (moto's S3 server on
loopback): the index goes first and comes back last, so a commit that fails half way leaves no index
(a loader says "materialize it first"), never the old index over a mix of files; a local root keeps
its rename; the pieces that need a local root refuse an object store by name."""

from pathlib import Path

import pytest

from refinery.fs import child, exists, join
from refinery.object_storage import ObjectStorage
from refinery.storage import Storage
from refinery.table_store import commit_folder, folder_staging, read_bytes
from refinery.tokens.loader import TokenLoaderError, read_index
from tests.s3_server import s3_credentials, s3_root

fixtures = (s3_root, s3_credentials)  # used by name


def stage(storage, files: dict[str, bytes]) -> Path:
    staging = folder_staging(storage, "training_tokens")
    for name, content in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(content)
    return staging


def test_a_failed_upload_leaves_no_index(s3_root, monkeypatch):
    store = ObjectStorage(s3_root)
    first = {"index.json": b'{"splits": {}}', "train/a.bin": b"a1", "train/b.bin": b"b1"}
    commit_folder(store, "training_tokens", stage(store, first))
    assert read_index(child(s3_root, "training_tokens")) == {"splits": {}}

    import refinery.table_store as table_store

    real, calls = table_store._upload, []

    def failing(filesystem, local, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("connection reset")
        real(filesystem, local, path)

    monkeypatch.setattr(table_store, "_upload", failing)
    with pytest.raises(OSError, match="connection reset"):
        commit_folder(
            store,
            "training_tokens",
            stage(store, {"index.json": b"{}", "train/a.bin": b"a2", "train/c.bin": b"c2"}),
        )
    folder = join(store.base, "training_tokens", "shards")
    assert not exists(store.fs, join(folder, "index.json"))
    with pytest.raises(TokenLoaderError, match="materialize training_tokens"):
        read_index(child(s3_root, "training_tokens"))
    monkeypatch.setattr(table_store, "_upload", real)
    commit_folder(store, "training_tokens", stage(store, {"index.json": b"{}", "train/c.bin": b"c3"}))
    with store.fs.open_input_stream(join(folder, "train", "c.bin")) as handle:
        assert handle.read() == b"c3"
    assert not exists(store.fs, join(folder, "train", "a.bin"))  # the old run's files are gone
    assert read_bytes(store, "training_tokens", "shards/index.json") == b"{}"


def test_a_local_root_renames_into_place(tmp_path):
    storage = Storage(tmp_path / "storage")
    final = commit_folder(storage, "training_tokens", stage(storage, {"index.json": b"{}", "x/y.bin": b"1"}))
    assert (
        final == tmp_path / "storage" / "training_tokens" / "shards"
        and (final / "x" / "y.bin").read_bytes() == b"1"
    )
    assert [p.name for p in final.parent.iterdir()] == ["shards"]  # no staging folder left
