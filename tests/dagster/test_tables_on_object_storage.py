"""The unpartitioned tables built from the corpus (tokenizer, tokenized_corpus, domain_weights,
dataset_splits, pretrain_mixture, training_schedule, training_tokens) through Dagster with the
``refinery`` resource rooted on an object store (moto's S3 server on loopback): the same tables,
the same tokenizer file and the token and schedule shards byte for byte as on a local root; the
loaders and ``refinery trace --step`` read them where they were written; a rerun replaces the
shards whole (no file of the old run left beside the new index)."""

from __future__ import annotations

import io
import json
import shutil

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from assets import tokenized_corpus, tokenizer
from assets.mixing import domain_weights, pretrain_mixture
from assets.schedule import dataset_splits, training_schedule
from assets.tokens import training_tokens
from refinery import names
from refinery.fs import child, join, listing
from refinery.object_storage import ObjectStorage
from refinery.paths import STORAGE_ROOT_ENV, Layout
from refinery.sample.target_sample import build_target_sample
from refinery.schedule.loader import ScheduleReader
from refinery.storage import Storage
from refinery.table_store import read_table
from refinery.tokens.loader import TokenReader, read_index
from refinery.tokens.trace import trace_step
from refinery_cli.commands import main as cli_main
from tests.dagster.conftest import resources_for
from tests.s3_server import CREDENTIALS, s3_credentials, s3_root
from tests.unit.token_helpers import corpus_texts, write_corpus

s3 = (s3_root, s3_credentials)  # fixtures, used by name
TABLES = [dataset_splits, domain_weights, pretrain_mixture, training_schedule, tokenizer]
CONFIG = {
    "tokenizer": {"vocab_size": 400, "held_out_per_source": 2},
    "domain_weights": {"methods": ["dsir"], "use": "dsir"},
    "pretrain_mixture": {"within_domain": "importance"},
    "training_schedule": {"docs_per_step": 4, "shard_docs": 7, "row_group_docs": 3},
}
PACK = {"seq_len": 48, "shard_sequences": 6, "chunk_sequences": 4}
WRITTEN = [
    (names.DATASET_SPLITS, None),
    (names.DOMAIN_WEIGHTS, None),
    (names.DOMAIN_WEIGHTS_DOCUMENTS, None),
    (names.PRETRAIN_MIXTURE, None),
    (names.TRAINING_SCHEDULE, None),
    (names.TOKENIZER, None),
    (names.TRAINING_TOKENS, None),
]


def seed_corpus(layout: Layout, store) -> list[str]:
    """The same pretrain_corpus partitions on both roots (what the text chain would have made), and
    the DSIR target set in the (local) inbox."""
    texts = corpus_texts()
    local = write_corpus(layout, texts)
    if store is not None:
        for source in texts:
            table = pq.read_table(local.path(names.PRETRAIN_CORPUS, source))
            with store.writer(names.PRETRAIN_CORPUS, source, table.schema, table.schema) as writer:
                writer.write(kept=table.to_pandas())
        shutil.rmtree(local.root)  # only the object store holds the corpus
    build_target_sample(layout.inbox_kind("target"), documents=20)
    return sorted(texts)


def build(instance, layout: Layout, sources: list[str], pack: dict = PACK) -> list[dg.ExecuteInProcessResult]:
    resources = resources_for(layout)  # reads $REFINERY_STORAGE_ROOT
    run = {"ops": {k: {"config": v} for k, v in CONFIG.items()}}
    results = [dg.materialize(TABLES, instance=instance, resources=resources, run_config=run)]
    for source in sources:
        results.append(
            dg.materialize([tokenized_corpus], partition_key=source, instance=instance, resources=resources)
        )
    config = {"ops": {"training_tokens": {"config": pack}}}
    results.append(
        dg.materialize([training_tokens], instance=instance, resources=resources, run_config=config)
    )
    assert all(r.success for r in results)
    checks = [c for r in results for c in r.get_asset_check_evaluations()]
    assert {c.check_name for c in checks} >= {"no_leakage", "shards_match_manifest", "tokens_exactly_once"}
    assert all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
    return results


def local_files(folder) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def remote_files(store: ObjectStorage, folder: str) -> dict[str, bytes]:
    out = {}
    for info in listing(store.fs, folder, recursive=True):
        if info.type == pafs.FileType.File:
            with store.fs.open_input_stream(info.path) as handle:
                out[info.path[len(folder) + 1 :]] = handle.read()
    return out


def comparable(name: str, content: bytes):
    """A file's bytes; litdata's index.json without its ``updated_at`` (a timestamp, which differs
    between two runs on the same root too)."""
    if name.endswith("litdata/index.json"):
        return {k: v for k, v in json.loads(content).items() if k != "updated_at"}
    return content


def without_metadata(table):
    return table.replace_schema_metadata(None)


@pytest.fixture(scope="module")
def roots(tmp_path_factory, s3_root):
    base = tmp_path_factory.mktemp("tables-on-s3")
    local_home, s3_home = Layout.at(base / "local"), Layout.at(base / "s3")
    store = ObjectStorage(s3_root)
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        for name, value in CREDENTIALS.items():  # module-scoped: the autouse fixture's are per test
            patch.setenv(name, value)
        patch.delenv(STORAGE_ROOT_ENV, raising=False)
        sources = seed_corpus(local_home, None)
        instance.add_dynamic_partitions("text_source", sources)
        local_results = build(instance, local_home, sources)
        patch.setenv(STORAGE_ROOT_ENV, s3_root)
        seed_corpus(s3_home, store)
        s3_results = build(instance, s3_home, sources)
    yield local_home, s3_home, store, sources, local_results, s3_results


def test_tables_and_shards_on_s3_equal_a_local_root(roots):
    local_home, s3_home, store, sources, _, s3_results = roots
    local = Storage(local_home.storage)
    for asset, name in WRITTEN:  # row for row, column for column, provenance too
        on_s3, on_disk = read_table(store, asset, name), read_table(local, asset, name)
        assert on_s3.num_rows == on_disk.num_rows > 0, asset
        assert without_metadata(on_s3).equals(without_metadata(on_disk)), (asset, name)
        assert store.table_provenance(asset, name) == local.table_provenance(asset, name)
    for source in sources:
        for rejected in (False, True):
            pd.testing.assert_frame_equal(
                store.read(names.TOKENIZED_CORPUS, source, rejected=rejected),
                local.read(names.TOKENIZED_CORPUS, source, rejected=rejected),
            )
    # The tokenizer file, the token shards (Megatron, litdata, index) and the schedule's Parquet
    # shards: byte for byte, and nothing else in their folders.
    for asset in (names.TOKENIZER, names.TRAINING_SCHEDULE, names.TRAINING_TOKENS):
        want = {k: v for k, v in local_files(local_home.storage / asset).items() if k != f"{asset}.parquet"}
        got = {
            k: v for k, v in remote_files(store, join(store.base, asset)).items() if k != f"{asset}.parquet"
        }
        assert got.keys() == want.keys() and want, asset
        assert all(comparable(k, got[k]) == comparable(k, want[k]) for k in want), asset
    assert not s3_home.storage.exists()  # only the object store holds the data
    (event,) = s3_results[-1].asset_materializations_for_node("training_tokens")
    assert event.metadata["shards"].value.startswith("s3://")


def test_loaders_and_trace_read_the_s3_root(roots, capsys, monkeypatch):
    local_home, s3_home, store, _, _, _ = roots
    local = Storage(local_home.storage)
    remote_tokens = child(store.root, names.TRAINING_TOKENS)
    assert read_index(remote_tokens) == read_index(local_home.storage / names.TRAINING_TOKENS)
    for split in ("train", "validation"):
        got = list(TokenReader(remote_tokens, split, 0, 1))
        want = list(TokenReader(local_home.storage / names.TRAINING_TOKENS, split, 0, 1))
        assert len(got) == len(want) > 0
        for a, b in zip(got, want, strict=True):
            assert all(np.array_equal(a[k], b[k]) for k in b)
        remote_schedule = child(store.root, names.TRAINING_SCHEDULE)
        assert list(ScheduleReader(remote_schedule, split, 0, 1, 2)) == list(
            ScheduleReader(local_home.storage / names.TRAINING_SCHEDULE, split, 0, 1, 2)
        )
    drop = ["raw_file"]  # the inbox of each home
    on_s3 = trace_step(store, 1, inbox=s3_home.inbox_kind("text")).drop(columns=drop)
    pd.testing.assert_frame_equal(on_s3, trace_step(local, 1).drop(columns=drop))
    monkeypatch.setenv(STORAGE_ROOT_ENV, store.root)
    capsys.readouterr()
    assert cli_main(["--home", str(s3_home.home), "trace", "--step", "1", "--format", "csv"]) == 0
    printed = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert printed["id"].tolist() == on_s3["id"].tolist()
    assert printed["raw_file"].str.startswith(str(s3_home.inbox_kind("text"))).all()


def test_a_rerun_replaces_the_shards_whole(roots, monkeypatch):
    _, s3_home, store, _, _, _ = roots
    monkeypatch.setenv(STORAGE_ROOT_ENV, store.root)
    folder = join(store.base, names.TRAINING_TOKENS, "shards")
    before = remote_files(store, folder)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [training_tokens],
            instance=instance,
            resources=resources_for(s3_home),
            run_config={"ops": {"training_tokens": {"config": PACK | {"shard_sequences": 50}}}},
        )
    assert result.success
    after = remote_files(store, folder)
    index = read_index(child(store.root, names.TRAINING_TOKENS))
    listed = {
        f"{s['prefix']}.{ext}"
        for e in index["splits"].values()
        for s in e["megatron"]
        for ext in ("bin", "idx")
    }
    megatron = {k for k in after if "/megatron/" in k}
    assert megatron == listed and len(megatron) < len({k for k in before if "/megatron/" in k})
    assert after["index.json"] != before["index.json"]
