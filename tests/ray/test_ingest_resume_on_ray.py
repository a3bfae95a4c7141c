"""A retried ingest on the ray engine reads only the inbox pieces the failed attempt did not finish,
on a local root and on an object store root (moto's S3 server on loopback), through Dagster, on the
session's two-node loopback cluster.

The inbox: JSONL files of several sizes, the largest read as byte ranges, with the same texts in
several files (derived ids that take a suffix) and an input id used twice (a ``duplicate_id``: the
later piece is read again by its id fix), and a malformed line. The read of one file fails once with
a ``ConnectionError`` (:mod:`tests.ray.flaky_reader`); Dagster retries the step. The retry reads
each remaining piece once, skips only pieces the first attempt completed, and its output (kept and
quarantine rows, ids, reasons, the manifest) equals a clean run's on the same kind of root and the
local engine's, row for row. Nothing of the failed attempt is left: no staging folder, no marker.
"""

from __future__ import annotations

import json
import random

import dagster as dg
import pandas as pd
import pyarrow.fs as pafs
import pytest

from refinery.manifest import read_manifest
from refinery.object_storage import ObjectStorage
from refinery.paths import STORAGE_ROOT_ENV, Layout
from refinery.sample import prose
from refinery.storage import Storage
from resources import EngineResource
from tests.conftest import write_source
from tests.dagster.conftest import resources_for
from tests.ray.flaky_reader import flaky_raw_documents
from tests.ray.shared_cluster import ray_cluster  # noqa: F401  (the session's cluster)
from tests.s3_server import CREDENTIALS, s3_credentials, s3_root  # noqa: F401  (fixtures)

pytestmark = pytest.mark.ray
ASSET = "flaky_raw_documents"
FAILING = "d.jsonl"  # a middle-sized file: pieces are read largest first, so some are done, some not
CONFIG = {"ops": {ASSET: {"config": {"split_bytes": 3000, "batch_rows": 4}}}}


def inbox() -> dict[str, bytes]:
    rng = random.Random(3)
    shared = prose.article(rng, "travel", paragraphs=1)  # in several files: ids -2, -3 …
    files = {}
    for n, name in enumerate(["a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl", "e.jsonl", "f.jsonl"]):
        records = [
            {"text": prose.article(rng, rng.choice(["history", "cooking"]), paragraphs=1)}
            for _ in range(24 - 3 * n)
        ]
        records[2] = {"text": shared}
        if name in ("b.jsonl", "e.jsonl"):
            records[5] = {"id": "same-id", "text": f"an input id given twice, here in {name}"}
        lines = [json.dumps(r).encode() for r in records]
        if name == "c.jsonl":
            lines.insert(4, b'{"text": "a line cut short')
        files[name] = b"\n".join(lines) + b"\n"
    return files


def test_a_retried_ingest_reads_only_the_pieces_not_done(ray_cluster, tmp_path, s3_root, monkeypatch):  # noqa: F811
    import ray

    address, markers = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
    engine = EngineResource(kind="ray", address=address, node_ip_address="127.0.0.1")
    runs = {}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", ["web"])
        for name in ("local-engine", "local-clean", "local-flaky", "s3-clean", "s3-flaky"):
            home = Layout.at(tmp_path / name)
            write_source(home, "web", inbox())
            for old in markers.iterdir():
                old.unlink()
            if name.endswith("flaky"):
                (markers / f"fail-once-{FAILING}").touch()
            if name.startswith("s3"):
                monkeypatch.setenv(STORAGE_ROOT_ENV, s3_home(s3_root, name))
            overrides = {} if name == "local-engine" else {"engine": engine}
            try:
                result = dg.materialize(
                    [flaky_raw_documents],
                    partition_key="web",
                    instance=instance,
                    resources=resources_for(home, **overrides),
                    run_config=CONFIG,
                )
            finally:
                ray.shutdown()
            assert result.success, name
            assert all(c.passed for c in result.get_asset_check_evaluations()), name
            store = ObjectStorage(s3_home(s3_root, name)) if name.startswith("s3") else Storage(home.storage)
            retried = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
            events = sorted(
                (int(p.name.split("-")[0]), p.name.split("-")[2], int(p.name.split("-")[3]))
                for p in markers.iterdir()
                if p.name[0].isdigit()
            )
            meta = result.asset_materializations_for_node(ASSET)[0].metadata
            runs[name] = {"store": store, "retried": retried, "events": events, "meta": meta, "home": home}
            monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)

    for root in ("local", "s3"):
        clean, flaky = runs[f"{root}-clean"], runs[f"{root}-flaky"]
        engine_meta = flaky["meta"]["engine"].value
        total = engine_meta["tasks"]
        assert engine_meta["ranges"] >= 2 and total >= 8, engine_meta  # a.jsonl is read as ranges
        assert not clean["retried"]
        # One retry. What each attempt started: the failing piece in both, every piece at least once,
        # and each piece the retry skipped was completed by the first attempt.
        assert len(flaky["retried"]) == 1, root
        boundary = int(flaky["retried"][0].timestamp * 1e9)
        first = [p for ns, event, p in flaky["events"] if event == "start" and ns < boundary]
        ended = {p for ns, event, p in flaky["events"] if event == "end" and ns < boundary}
        retry = [p for ns, event, p in flaky["events"] if event == "start" and ns >= boundary]
        print(f"{root}: the first attempt started {first}, ended {sorted(ended)}; the retry read {retry}")
        assert len(retry) == len(set(retry)) < total, (first, retry)  # the retry read only what was left
        assert engine_meta["pieces_read"] == len(retry), engine_meta
        assert engine_meta["pieces_resumed"] == total - len(retry) >= 2, engine_meta
        assert set(first) | set(retry) == set(range(total))
        assert set(range(total)) - set(retry) <= ended  # only completed pieces were skipped
        failing = {p for p in first if p not in ended} & set(retry)
        assert failing, (first, ended, retry)  # the piece that failed was read again
        assert (
            engine_meta["plan_resumed"]
            and engine_meta["ids_fixed"] >= 3
            and engine_meta["pieces_reread"] >= 1
        )
        assert clean["meta"]["engine"].value["pieces_resumed"] == 0

        # Row for row: the retried run, a clean run on the same root, the local engine.
        local = runs["local-engine"]["store"]
        for rejected in (False, True):
            want = local.read(ASSET, "web", rejected=rejected)
            for run in (clean, flaky):
                pd.testing.assert_frame_equal(run["store"].read(ASSET, "web", rejected=rejected), want)
        got = flaky["store"].read(ASSET, "web", rejected=True)
        assert {"duplicate_id", "malformed_json"} <= set(got["reason"])
        ids = flaky["store"].read(ASSET, "web")["id"]
        assert ids.is_unique and ids.str.endswith("-2").any()
        for rejected in (False, True):
            manifests = [manifest(run["store"], rejected) for run in (clean, flaky)]
            assert manifests[0] == manifests[1], (root, rejected)
        assert leftovers(flaky["store"]) == [], root


def s3_home(root: str, name: str) -> str:
    """A root of its own under the bucket, the access key in the URI (the workers have none)."""
    head, _, query = root.partition("?")
    key, secret = CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    return f"{head.replace('s3://', f's3://{key}:{secret}@', 1)}/{name}?{query}"


def manifest(store, rejected: bool) -> dict:
    """The manifest without the part names (on an object store they name the writing attempt)."""
    if isinstance(store, ObjectStorage):
        body = store.manifest(ASSET, "web", rejected)
    else:
        body = read_manifest(store.parts_path(ASSET, "web", rejected))
    return {**body, "parts": [{k: v for k, v in p.items() if k != "name"} for p in body["parts"]]}


def leftovers(store) -> list[str]:
    """What else is under the root than the committed outputs: staging folders, markers, id keys."""
    if isinstance(store, ObjectStorage):
        found = []
        for info in store.fs.get_file_info(pafs.FileSelector(store.base, recursive=True)):
            if info.type != pafs.FileType.File:
                continue
            listed = {p["name"] for r in (False, True) for p in store.manifest(ASSET, "web", r)["parts"]}
            if "/_work/" in info.path or (
                info.base_name.startswith("part-") and info.base_name not in listed
            ):
                found.append(info.path)
        return found
    return sorted(str(p) for p in store.root.rglob("*") if p.name.startswith(".") and p.name != ".stats")
