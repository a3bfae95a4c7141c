"""The SFT chain (raw_sft → sft_checked → sft_selected), the image-text chain (raw_image_text →
image_text_checked → clip_scored → clip_filtered) and the keyframe stages through Dagster with the
``refinery`` resource rooted on an object store (moto's S3 server on loopback): the same rows and
reasons as a local root's, per stage; the chosen frames uploaded under the same keys as the local
layout's files, the same bytes. clip_filtered runs in top_fraction mode: the ranking's scratch
(sketched slices, the range shuffle) lives under the root's URI and is gone after."""

from __future__ import annotations

import shutil

import dagster as dg
import pandas as pd
import pyarrow.fs as pafs
import pytest

from assets.multimodal import (
    clip_filtered,
    clip_scored,
    image_text_checked,
    raw_image_text,
    raw_videos,
    video_keyframes,
)
from assets.sft import raw_sft, sft_checked, sft_selected
from refinery.fs import join, listing
from refinery.object_storage import ObjectStorage
from refinery.paths import STORAGE_ROOT_ENV, Layout
from refinery.sample.multimodal_sample import build_image_text_sample, build_video_sample
from refinery.sample.sft_sample import build_sft_sample
from refinery.storage import Storage
from refinery.table_store import local_root
from resources import build_resources
from tests.dagster.test_multimodal_assets import KEYFRAMES, require_tiny_clip
from tests.s3_server import CREDENTIALS, s3_credentials, s3_root

s3 = (s3_root, s3_credentials)  # fixtures, used by name
SFT = [raw_sft, sft_checked, sft_selected]
IMAGE_TEXT = [raw_image_text, image_text_checked, clip_scored, clip_filtered]
CHAINS = {  # partition set, source, assets, their run config
    "sft": (
        "sft_source",
        "alpaca",
        SFT,
        {"sft_selected": {"config": {"budget_count": 8, "allocation": "uniform"}}},
    ),
    "image_text": (  # top_fraction: its ranking's scratch files and tasks go through the root's URI
        "image_text_source",
        "shapes",
        IMAGE_TEXT,
        {"clip_filtered": {"config": {"mode": "top_fraction", "top_fraction": 0.5}}},
    ),
    "video": (
        "video_source",
        "clips",
        [raw_videos, video_keyframes],
        {"video_keyframes": {"config": KEYFRAMES}},
    ),
}


def build_homes(layout: Layout) -> None:
    build_sft_sample(layout.inbox_kind("sft"), seed=3, records_per_source=16)
    build_image_text_sample(layout.inbox_kind("image_text"), seed=5, pairs=12)
    build_video_sample(layout.inbox_kind("video"), seed=5)


def run_chains(instance, layout: Layout) -> dict[str, dg.ExecuteInProcessResult]:
    resources = build_resources(
        "local", home=str(layout.home), device="cpu", batch_size=16, dataloader_workers=0
    )  # the storage root from $REFINERY_STORAGE_ROOT
    results = {}
    for name, (partitions, source, assets, config) in CHAINS.items():
        if source not in instance.get_dynamic_partitions(partitions):
            instance.add_dynamic_partitions(partitions, [source])
        results[name] = dg.materialize(
            assets, partition_key=source, instance=instance, resources=resources, run_config={"ops": config}
        )
    return results


def homeless(frame: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """Reasons that name an inbox file name it under each home: the home made a placeholder."""
    if "reason_detail" in frame:
        frame["reason_detail"] = frame["reason_detail"].str.replace(str(layout.home), "<home>")
    return frame


@pytest.fixture(scope="module")
def roots(tmp_path_factory, s3_root):
    require_tiny_clip()
    base = tmp_path_factory.mktemp("sft-multimodal-on-s3")
    local_home, s3_home = Layout.at(base / "local"), Layout.at(base / "s3")
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        for name, value in CREDENTIALS.items():  # module-scoped: the autouse fixture's are per test
            patch.setenv(name, value)
        build_homes(local_home)  # one inbox, copied: the encoder's output differs run to run
        shutil.copytree(local_home.inbox, s3_home.inbox)
        patch.delenv(STORAGE_ROOT_ENV, raising=False)
        local_results = run_chains(instance, local_home)
        patch.setenv(STORAGE_ROOT_ENV, s3_root)
        s3_results = run_chains(instance, s3_home)
    store = ObjectStorage(s3_root)
    yield local_home, s3_home, store, local_results, s3_results
    shutil.rmtree(local_root(store), ignore_errors=True)  # the SFT plan's scratch (named after the root)


@pytest.mark.parametrize("chain", list(CHAINS))
def test_chain_on_s3_equals_a_local_root(roots, chain):
    local_home, s3_home, store, local_results, s3_results = roots
    local = Storage(local_home.storage)
    _, source, assets, _ = CHAINS[chain]
    assert local_results[chain].success and s3_results[chain].success
    checks = s3_results[chain].get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    for asset in assets:
        stage = asset.key.to_user_string()
        for rejected in (False, True):
            on_s3 = homeless(store.read(stage, source, rejected=rejected), s3_home)
            on_disk = homeless(local.read(stage, source, rejected=rejected), local_home)
            assert len(on_s3) == len(on_disk) and (len(on_s3) or rejected), (stage, rejected)
            pd.testing.assert_frame_equal(on_s3, on_disk, check_exact=False, rtol=1e-5, obj=stage)
    assert not s3_home.storage.exists()  # the plan, copies and frames were scratch: only S3 holds data
    staged = join(store.base, "_staging", "clip_filtered")  # the ranking's scratch, removed
    assert not [i for i in listing(store.fs, staged, recursive=True) if i.type == pafs.FileType.File]


def test_keyframes_are_uploaded_where_the_rows_name_them(roots):
    local_home, _, store, _, _ = roots
    rows = store.read("video_keyframes", "clips")
    named = sorted({p for paths in rows["frame_paths"] for p in paths})
    assert named
    folder = join(store.base, "video_keyframes", "clips")
    stored = sorted(
        i.path[len(store.base) + 1 :]
        for i in listing(store.fs, folder, recursive=True)
        if i.type == pafs.FileType.File and i.base_name.endswith(".jpg")
    )
    assert stored == named  # every frame a row names, and no other
    for relative in named:
        with store.fs.open_input_stream(join(store.base, relative)) as handle:
            assert handle.read() == (local_home.storage / relative).read_bytes()
