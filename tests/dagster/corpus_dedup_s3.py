"""corpus_fuzzy_dedup through Dagster on an object-store root (moto's S3 on loopback), on the local
engine, over the homes the rule-chain test of tests/dagster/test_storage_root_options.py built (the
same inbox run through the chain once per root): the table on S3 equals the local root's row for row,
with the same owners and similarities; the shuffle's files are written under the root and go once
the manifest commits the table; the folder holds the manifest and exactly the parts it lists."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pyarrow.fs as pafs

from assets import corpus_fuzzy_dedup
from refinery import names
from refinery.object_storage import ObjectStorage
from refinery.paths import STORAGE_ROOT_ENV, Layout
from refinery.storage import Storage
from resources import build_resources

TABLE = (names.CORPUS_FUZZY_DEDUP, names.CORPUS_FUZZY_DEDUP)
FIGURES = (
    "documents_in", "kept", "removed", "candidate_pairs", "verified_edges", "lsh_false_candidates_dropped",
    "components_with_duplicates", "largest_component", "removed_by_batch", "removed_by_incremental",
    "removed_by_both", "only_batch", "only_incremental", "removed_by_incremental_replay",
)  # fmt: skip


def metadata_of(result: dg.ExecuteInProcessResult) -> dict:
    event = result.asset_materializations_for_node(names.CORPUS_FUZZY_DEDUP)[0]
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def shuffle_leftovers(store: ObjectStorage) -> list[str]:
    selector = pafs.FileSelector(f"{store.base}/_shuffle", allow_not_found=True, recursive=True)
    return [i.path for i in store.fs.get_file_info(selector) if i.type == pafs.FileType.File]


def check_corpus_dedup_on_s3(
    instance, local_home: Layout, s3_home: Layout, s3_root: str, monkeypatch
) -> None:
    runs = {}
    for kind, home in (("local", local_home), ("s3", s3_home)):
        if kind == "local":
            monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
        else:
            monkeypatch.setenv(STORAGE_ROOT_ENV, s3_root)
        runs[kind] = dg.materialize(
            [corpus_fuzzy_dedup],
            instance=instance,
            resources=build_resources("local", home=str(home.home), device="cpu"),
        )
        assert runs[kind].success
        assert all(c.passed for c in runs[kind].get_asset_check_evaluations())
    store = ObjectStorage(s3_root)
    want = Storage(local_home.storage).read(*TABLE)
    got = store.read(*TABLE)
    pd.testing.assert_frame_equal(got, want)
    assert (~got["kept"]).sum() >= 1 and got["source"].nunique() == 2
    meta, want_meta = metadata_of(runs["s3"]), metadata_of(runs["local"])
    for figure in FIGURES:
        assert meta[figure] == want_meta[figure], figure
    assert meta["output"].startswith("s3://refinery-test/refinery/corpus_fuzzy_dedup/")
    manifest = store.manifest(*TABLE)
    event = runs["s3"].asset_materializations_for_node(names.CORPUS_FUZZY_DEDUP)[0]
    assert event.tags["dagster/data_version"] == manifest["version"] == meta["manifest"]["version"]
    folder = store.parts_path(*TABLE)
    listed = [p["name"] for p in manifest["parts"]]
    found = {i.base_name for i in store.fs.get_file_info(pafs.FileSelector(folder))}
    assert found == set(listed) | {"_manifest.json"} and listed == sorted(listed)
    assert shuffle_leftovers(store) == []
    assert not s3_home.storage.exists()  # nothing local: the shuffle ran under the bucket
