"""The text chain on a real two-node Ray cluster on loopback, through the Dagster CLI.

The session's loopback cluster (a head and a second worker node, ``ray start`` each in its own
process group: the ``ray_cluster`` fixture of tests/ray/shared_cluster.py), Redis holding the
dedup indexes, and ``dagster asset materialize`` running the rule-based chain with the ``ray``
engine. The outputs must equal the local engine's, row for
row and reason for reason. Also: an unreachable address fails naming it before anything is
written, and a worker killed in the middle of a stage is retried, the partition complete.

Run alone with ``pytest -m ray``; it also runs in the default suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.factory import STAGE_ASSETS
from refinery import names
from refinery.engine.loopback import free_port
from refinery.paths import Layout
from refinery.stages import text as text_stages
from refinery.storage import Storage
from tests.conftest import write_source
from tests.dagster.conftest import build_inbox, jsonl, resources_for
from tests.dagster.corpus_dedup_scenario import corpus, materialize_corpus
from tests.ray.shared_cluster import ray_cluster  # noqa: F401  (the session's cluster; other files import it from here)

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PREFILTER = ",".join(text_stages.TEXT_PREFILTER_STAGES)


def _base_env(**extra: str) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT), "RAY_DISABLE_USAGE_STATS": "1"}
    env.update(extra)
    return env


def materialize(
    home: Layout,
    select: str,
    partition: str,
    config: dict,
    module: str = "definitions",
    register: bool = True,
):
    """``dagster asset materialize`` in a subprocess, as a user runs it; ``register`` first runs
    ``refinery partitions`` (once per home is enough: later calls find nothing new)."""
    env = _base_env(REFINERY_HOME=str(home.home), DAGSTER_HOME=str(home.dagster_home))
    home.dagster_home.mkdir(parents=True, exist_ok=True)
    (home.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    if register:
        subprocess.run(
            [BIN / "refinery", "--home", str(home.home), "partitions"],
            env=env,
            check=True,
            capture_output=True,
        )
    return subprocess.run(
        [BIN / "dagster", "asset", "materialize", "-m", module, "--select", select, "--partition", partition,
         "--config-json", json.dumps(config)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def run_config(engine: dict, redis_url: str, namespace: str) -> dict:
    return {
        "resources": {
            "engine": {"config": engine},
            "dedup_index": {"config": {"backend": "redis", "redis_url": redis_url, "namespace": namespace}},
        },
        # Small row groups, so a small partition still makes several slices for two nodes.
        "ops": {"raw_documents": {"config": {"batch_rows": 3}}},
    }


def ray_engine(address: str) -> dict:
    return {"kind": "ray", "address": address, "node_ip_address": "127.0.0.1", "slice_rows": 3}


def frames(home: Layout, stage: str, source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    storage = Storage(home.storage)
    return storage.read(stage, source), storage.read(stage, source, rejected=True)


def materialize_local(home: Layout, sources: tuple[str, ...], redis_url: str, namespace: str) -> None:
    """The same stages and options as :func:`run_config` gives the CLI, on the local engine, under
    ``materialize()`` in this process: the reference the Ray runs are compared with (two CLI starts
    fewer per comparison)."""
    from resources import DedupIndexResource

    dedup = DedupIndexResource(backend="redis", redis_url=redis_url, namespace=namespace)
    stages = [STAGE_ASSETS[name] for name in text_stages.TEXT_PREFILTER_STAGES]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", list(sources))
        for source in sources:  # in order: dedup is first come, first served
            done = dg.materialize(
                stages, partition_key=source, instance=instance, resources=resources_for(home, dedup),
                run_config={"ops": run_config({"kind": "local"}, redis_url, namespace)["ops"]},
            )  # fmt: skip
            assert done.success


def test_text_chain_on_two_nodes_equals_the_local_engine(ray_cluster, redis_clean, tmp_path):  # noqa: F811
    address, _ = ray_cluster
    on_ray, local = Layout.at(tmp_path / "ray"), Layout.at(tmp_path / "local")
    for home in (on_ray, local):
        build_inbox(home)
    for source in ("alpha", "beta"):  # in order: dedup is first come, first served
        config = run_config(ray_engine(address), redis_clean, "ray")
        done = materialize(on_ray, PREFILTER, source, config, register=source == "alpha")
        assert done.returncode == 0, done.stderr[-4000:]
    materialize_local(local, ("alpha", "beta"), redis_clean, "local")
    storage = Storage(on_ray.storage)
    for source in ("alpha", "beta"):
        for stage in text_stages.TEXT_PREFILTER_STAGES:
            kept, rejected = frames(on_ray, stage, source)
            want_kept, want_rejected = frames(local, stage, source)
            pd.testing.assert_frame_equal(kept, want_kept, check_dtype=False)
            pd.testing.assert_frame_equal(rejected, want_rejected, check_dtype=False)
        parts = storage.files(names.CLEAN_DOCUMENTS, source)
        assert len(parts) > 1 and all(p.name.startswith("part-") for p in parts)
    engine = storage.read_stats(names.CLEAN_DOCUMENTS)["alpha"]["engine"]
    assert engine["engine"] == "ray" and engine["slices"] > 1 and engine["address"] == address
    # The exact duplicate of alpha in beta was found through the shared Redis index.
    _, rejected = frames(on_ray, names.EXACT_DEDUPLICATED, "beta")
    assert (rejected["reason"] == "exact_duplicate").any()
    # The hashes and MinHash signatures were computed by the cluster's workers, the claims made in
    # the step, and the rows written by the workers from the claims' outcomes, a slice each.
    with dg.DagsterInstance.from_config(str(on_ray.dagster_home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(names.FUZZY_DEDUPLICATED))
    assert event.asset_materialization.metadata["signatures_computed_by"].value == "ray"
    for stage in (names.EXACT_DEDUPLICATED, names.FUZZY_DEDUPLICATED):
        engine = storage.read_stats(stage)["beta"]["engine"]
        assert (
            engine["engine"] == "ray"
            and engine["slices"] > 1
            and engine["slices_processed"] == engine["slices"]
        )
        assert len(storage.files(stage, "beta")) == engine["slices"]


def test_an_unreachable_address_fails_naming_it_and_writes_nothing(redis_clean, tmp_path):
    home = Layout.at(tmp_path / "home")
    build_inbox(home)
    address = f"127.0.0.1:{free_port()}"
    done = materialize(home, PREFILTER, "alpha", run_config(ray_engine(address), redis_clean, "down"))
    assert done.returncode != 0
    assert f"cannot reach the Ray cluster at '{address}'" in done.stdout + done.stderr
    assert not Storage(home.storage).exists(names.RAW_DOCUMENTS, "alpha")
    assert not list(home.storage.rglob("*.parquet"))


def test_a_loopback_clusters_workers_listen_in_the_port_range_it_was_given():
    """``worker_ports``: a machine shared with other jobs holding ports in Ray's default range
    (10002-19999) gives each cluster its own; the task's worker listens there."""
    import ray

    from refinery.engine.loopback import loopback_cluster

    first = 27950
    with loopback_cluster(1, 1, worker_ports=(first, first + 49)) as cluster:
        ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
        try:

            @ray.remote(num_cpus=1)
            def listening() -> list[int]:
                import psutil

                return [c.laddr.port for c in psutil.Process().net_connections("tcp") if c.status == "LISTEN"]

            ports = ray.get(listening.remote())
        finally:
            ray.shutdown()
    assert ports and all(first <= p <= first + 49 for p in ports), ports


def test_a_killed_worker_is_retried_and_the_partition_is_complete(ray_cluster, tmp_path):  # noqa: F811
    address, markers = ray_cluster
    home = Layout.at(tmp_path / "home")
    texts = [f"Document number {i} has a few words of its own, {i * 7} of them." for i in range(24)]
    write_source(
        home, "many", {"docs.jsonl": jsonl({"id": f"d{i:02d}", "text": t} for i, t in enumerate(texts))}
    )
    config = {
        "resources": {"engine": {"config": ray_engine(address)}},
        "ops": {"raw_documents": {"config": {"batch_rows": 3}}},
    }
    # The driver builds its own processor too (for the provenance and the report), so it needs the
    # markers folder as much as the workers do.
    env = _base_env(
        REFINERY_HOME=str(home.home), DAGSTER_HOME=str(home.dagster_home), REFINERY_TEST_MARKERS=str(markers)
    )
    home.dagster_home.mkdir(parents=True)
    (home.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    subprocess.run([BIN / "refinery", "--home", str(home.home), "partitions"], env=env, check=True)
    proc = subprocess.Popen(
        [BIN / "dagster", "asset", "materialize", "-m", "tests.ray.slow_stage",
         "--select", "raw_documents,slow_copy", "--partition", "many", "--config-json", json.dumps(config)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    victim = None
    deadline = time.monotonic() + 600
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        started = sorted(markers.iterdir(), key=lambda p: p.name.split("-")[-1])
        workers = {int(p.name.split("-")[0]) for p in started} - {proc.pid}
        if len(started) >= 2 and workers:  # a worker is in the middle of its slices
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.2)
    out, _ = proc.communicate(timeout=900)
    assert victim is not None, out[-3000:]
    assert proc.returncode == 0, out[-4000:]
    storage = Storage(home.storage)
    raw = storage.read(names.RAW_DOCUMENTS, "many")
    copied = storage.read("slow_copy", "many")
    assert copied["id"].tolist() == raw["id"].tolist() == [f"d{i:02d}" for i in range(24)]
    assert storage.row_count("slow_copy", "many", rejected=True) == 0
    started_by = {}
    for marker in markers.iterdir():
        pid, first = marker.name.split("-")[:2]
        started_by.setdefault(first, set()).add(int(pid))
    assert any(victim in pids and len(pids) > 1 for pids in started_by.values()), started_by
    # Both nodes worked on the slices (one CPU each, so one actor each).
    engine = storage.read_stats("slow_copy")["many"]["engine"]
    assert engine["slices"] == 8 and engine["nodes"] == 2, engine


def _metadata(result) -> dict:
    event = result.asset_materializations_for_node(names.CORPUS_FUZZY_DEDUP)[0]
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def test_corpus_fuzzy_dedup_on_two_nodes_equals_the_local_engine(ray_cluster, tmp_path, monkeypatch):  # noqa: F811
    """corpus_fuzzy_dedup with the ray engine, this process attached to the loopback cluster: every
    step of the shuffle as Ray tasks on the workers (several pieces per partition), with the first
    bucket reducer and the first large-star task of the components killing their own worker
    (SIGKILL): Ray reruns them, and the table and the figures equal the local engine's."""
    import ray

    from assets import corpus_fuzzy_dedup
    from refinery.dedup import corpus_shuffle, distributed_components
    from refinery.engine.slices import plan_slices
    from resources import EngineResource
    from tests.ray import dedup_faults

    address, markers = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    home = Layout.at(tmp_path / "home")
    home.inbox_kind("text").mkdir(parents=True)
    small_groups = {"ops": {names.EXACT_DEDUPLICATED: {"config": {"batch_rows": 4}}}}
    no_replay = {"ops": {names.CORPUS_FUZZY_DEDUP: {"config": {"replay_incremental": False}}}}
    storage = Storage(home.storage)
    engine = EngineResource(kind="ray", address=address, node_ip_address="127.0.0.1", slice_rows=4)
    with dg.instance_for_test() as instance:
        materialize_corpus(instance, home, corpus(per_kind=2), run_config=small_groups)
        upstream = storage.require(names.EXACT_DEDUPLICATED, "part0")
        assert len(plan_slices(upstream, 4)) > 1  # several pieces per partition
        local = dg.materialize(
            [corpus_fuzzy_dedup], instance=instance, resources=resources_for(home), run_config=no_replay
        )
        assert local.success
        want = storage.read(names.CORPUS_FUZZY_DEDUP, names.CORPUS_FUZZY_DEDUP)
        monkeypatch.setenv("REFINERY_TEST_MARKERS", str(markers))
        monkeypatch.setattr(corpus_shuffle, "pairs_task", dedup_faults.pairs_task_dying_once)
        monkeypatch.setattr(
            distributed_components, "large_star_task", dedup_faults.large_star_task_dying_once
        )
        try:  # replay_incremental left at its default: skipped on a distributed engine
            on_ray = dg.materialize(
                [corpus_fuzzy_dedup], instance=instance, resources=resources_for(home, engine=engine)
            )
        finally:
            ray.shutdown()
    assert on_ray.success
    killed = {p.name: int(p.read_text()) for p in dedup_faults.kills_folder().iterdir()}
    assert set(killed) == {"pairs", "large-star"} and os.getpid() not in killed.values()
    for pid in killed.values():  # the workers really died
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    got = storage.read(names.CORPUS_FUZZY_DEDUP, names.CORPUS_FUZZY_DEDUP)
    pd.testing.assert_frame_equal(got, want)
    assert (~got["kept"]).sum() >= 4
    assert len(storage.files(names.CORPUS_FUZZY_DEDUP, names.CORPUS_FUZZY_DEDUP)) > 4  # one part per piece
    assert not list((home.storage / "_shuffle").rglob("*.parquet"))  # the shuffle's files are gone
    meta, want_meta = _metadata(on_ray), _metadata(local)
    assert meta["signatures_computed_by"] == meta["pairs_grouped_by"] == "ray"
    assert want_meta["signatures_computed_by"] == want_meta["pairs_grouped_by"] == "local"
    for figure in ("candidate_pairs", "verified_edges", "lsh_false_candidates_dropped", "shared_buckets",
                   "removed_by_batch", "removed_by_incremental", "only_batch", "kept", "removed",
                   "components_with_duplicates", "largest_component"):  # fmt: skip
        assert meta[figure] == want_meta[figure], figure
    assert meta["shuffle"]["reducers"] == 2 and want_meta["shuffle"]["reducers"] == 1
    assert meta["incremental_replay"].startswith("skipped on the ray engine")  # nothing read in the step
    assert "removed_by_incremental_replay" not in meta and "incremental_replay" not in meta["peak_memory_mb"]
    assert all(c.passed for c in on_ray.get_asset_check_evaluations())


def test_the_dagster_process_holds_no_rows_of_the_corpus_wide_dedup(ray_cluster, tmp_path):  # noqa: F811
    """The Dagster CLI's process tree (the cluster's workers excluded), corpus_fuzzy_dedup on the
    ray engine: its peak RSS grows by at most 1.25x when the corpus grows 4x. Measured with the code
    before the shuffle (benchmarks/bench_driver_memory.py, same corpora): 524 -> 786 MB, 1.50x, since the
    step held every signature, band row and pair."""
    from tests.ray.driver_memory import materialize_measured, write_corpus

    address, _ = ray_cluster
    engine = {"kind": "ray", "address": address, "node_ip_address": "127.0.0.1", "slice_rows": 10_000}
    peaks = {}
    for docs in (SMALL_CORPUS, 4 * SMALL_CORPUS):
        home = Layout.at(tmp_path / str(docs))
        write_corpus(home, docs)
        rc, peaks[docs], out = materialize_measured(home, engine)
        assert rc == 0, out[-4000:]
        table = Storage(home.storage).read(
            names.CORPUS_FUZZY_DEDUP, names.CORPUS_FUZZY_DEDUP, columns=["kept"]
        )
        assert len(table) == docs and (~table["kept"]).sum() >= docs // 40  # most near-copies went
    ratio = peaks[4 * SMALL_CORPUS] / peaks[SMALL_CORPUS]
    assert ratio <= 1.25, {k: round(v / 2**20) for k, v in peaks.items()}


SMALL_CORPUS = 50_000


def _ingest_inbox(home: Layout) -> int:
    """A text source with a large JSONL (a malformed line, ids used twice, texts seen twice) beside
    a corrupt Parquet file, a truncated gzip, a page and a file that cannot be read; an SFT source
    with an id used twice. Returns a range size whose first cut falls inside the malformed line."""
    import gzip

    records = [{"id": f"d{i}", "text": f"Line {i} of the big file, with words."} for i in range(40)]
    records[30] = {"id": "d5", "text": "The id d5 was used before, in an earlier range."}
    records += [{"text": "A text that comes twice."}] * 2
    bad = b'{"text": "this JSON line is malformed and crosses the first range boundary", '
    head = jsonl(records[:12])
    write_source(home, "big", {
        "a.jsonl": head + bad + b"\n" + jsonl(records[12:]),
        "b.parquet": b"PAR1 this is not a parquet file",
        "c.jsonl.gz": gzip.compress(jsonl([{"text": "A text that comes twice."}] * 3))[:-12],
        "d.html": "<html><body><main><p>A page that reads on its own.</p></main></body></html>",
    })  # fmt: skip
    (home.inbox_source("text", "big") / "e.jsonl").symlink_to(
        "/proc/self/mem"
    )  # unreadable (EIO), even by root
    chat = [{"instruction": f"Say {i}.", "output": "Done."} for i in range(20)]
    chat[3]["id"] = chat[17]["id"] = "same"
    folder = home.inbox_source("sft", "chat")
    folder.mkdir(parents=True)
    (folder / "chat.jsonl").write_bytes(jsonl(chat))
    return len(head) + len(bad) // 2


def test_ingest_per_file_and_range_on_two_nodes_equals_the_local_engine(ray_cluster, tmp_path, monkeypatch):  # noqa: F811
    """raw_documents and raw_sft on the ray engine through Dagster: one task per file and per byte
    range of the large JSONL (split_bytes), on the cluster's workers; rows, ids, line numbers,
    quarantine reasons, counts and stats equal the local engine's, and a manifest lists the parts."""
    import ray

    from assets import raw_documents, raw_sft
    from refinery.manifest import read_manifest
    from resources import EngineResource

    address, _ = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    engine = EngineResource(kind="ray", address=address, node_ip_address="127.0.0.1")
    outputs = (("raw_documents", "big"), ("raw_sft", "chat"))
    runs = {}
    for name, extra in (("local", {}), ("ray", {"engine": engine})):
        home = Layout.at(tmp_path / name)
        split = _ingest_inbox(home)
        options = {"config": {"split_bytes": split, "batch_rows": 4}}
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("text_source", ["big"])
            instance.add_dynamic_partitions("sft_source", ["chat"])
            try:
                for asset, (key, source) in zip((raw_documents, raw_sft), outputs, strict=True):
                    done = dg.materialize(
                        [asset], partition_key=source, instance=instance,
                        resources=resources_for(home, **extra), run_config={"ops": {key: options}},
                    )  # fmt: skip
                    assert done.success
                    assert all(c.passed for c in done.get_asset_check_evaluations())
            finally:
                ray.shutdown()
        storage = Storage(home.storage)
        summaries = {asset: storage.read_stats(asset)[source] for asset, source in outputs}
        engines = {asset: summary.pop("engine", None) for asset, summary in summaries.items()}
        runs[name] = {
            "frames": {asset: frames(home, asset, source) for asset, source in outputs},
            "summaries": summaries,
            "engines": engines,
            "storage": storage,
        }
    for asset, _ in outputs:
        for got, want in zip(runs["ray"]["frames"][asset], runs["local"]["frames"][asset], strict=True):
            pd.testing.assert_frame_equal(got, want)
        assert runs["ray"]["summaries"][asset] == runs["local"]["summaries"][asset]
    kept, rejected = runs["ray"]["frames"]["raw_documents"]
    reasons = set(rejected["reason"])
    assert {
        "malformed_json",
        "duplicate_id",
        "unreadable_parquet",
        "corrupt_archive",
        "unreadable_file",
    } <= reasons
    assert rejected.loc[rejected["reason"] == "malformed_json", "line"].tolist() == [13]
    twice = kept.loc[kept["text"] == "A text that comes twice.", "id"]  # in one range, then in another
    assert len(twice) >= 2 and twice.is_unique and twice.iloc[1] == twice.iloc[0] + "-2"
    text_engine = runs["ray"]["engines"]["raw_documents"]
    assert text_engine["runner"] == "ray" and text_engine["ranges"] > 2 and text_engine["tasks"] > 4
    assert runs["local"]["engines"]["raw_documents"] is None
    storage = runs["ray"]["storage"]
    manifest = read_manifest(storage.parts_path(names.RAW_DOCUMENTS, "big"))
    assert manifest["rows"] == len(kept) and len(manifest["parts"]) == text_engine["tasks"]
