"""The rule-based text chain through Dagster with the ``refinery`` resource rooted on an object store
(moto's S3 server on loopback, through pyarrow.fs): every stage's parts and manifest on S3, the
asset checks read back from S3, DuckDB views over the manifests' parts, and the same rows, reasons
and statistics as a run on a local root. Then, on the same two homes, the model stages
(:mod:`tests.dagster.model_stages_s3`: models, scores, embeddings, semantic dedup, the vector index
and search), so the chain runs once per root for both."""

import io

import dagster as dg
import pandas as pd
import pyarrow.fs as pafs

from assets import TEXT_PREFILTER
from refinery.object_storage import ObjectStorage
from refinery.paths import STORAGE_ROOT_ENV, Layout
from refinery.sql import connect
from refinery.storage import Storage
from refinery_cli.commands import main as cli_main
from resources import RefineryHome, build_resources
from tests.dagster.conftest import build_inbox
from tests.dagster.corpus_dedup_s3 import check_corpus_dedup_on_s3
from tests.dagster.model_stages_s3 import check_model_stages_on_s3
from tests.s3_server import s3_credentials, s3_root

s3 = (s3_root, s3_credentials)  # fixtures, used by name
SOURCES = ("alpha", "beta")
# The option this file exercises (tests/dagster/test_option_coverage.py reads it): the refinery
# resource's storage_root, set through $REFINERY_STORAGE_ROOT to a bucket on moto's S3 server.
ROUNDS = {"s3": {"refinery": {"storage_root": "s3://refinery-test/refinery?endpoint_override=…"}}}
STAGES = [a.key.to_user_string() for a in TEXT_PREFILTER]


def run_chain(instance, layout: Layout, sources=SOURCES) -> dict[str, dg.ExecuteInProcessResult]:
    """The rule-based chain per source, with the resources as deployed: the storage root comes
    from ``$REFINERY_STORAGE_ROOT`` when set (an ``EnvVar`` of the ``refinery`` resource)."""
    resources = build_resources("local", home=str(layout.home), device="cpu")
    results = {}
    for source in sources:
        if source not in instance.get_dynamic_partitions("text_source"):
            instance.add_dynamic_partitions("text_source", [source])
        results[source] = dg.materialize(
            TEXT_PREFILTER, partition_key=source, instance=instance, resources=resources
        )
    return results


def without_timing(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k not in ("seconds", "mb_per_s", "engine")}


def test_prefilter_chain_on_s3_equals_a_local_root(tmp_path, instance, s3_root, monkeypatch, capsys):
    local_home, s3_home = Layout.at(tmp_path / "local"), Layout.at(tmp_path / "s3")
    for layout in (local_home, s3_home):  # the same inbox; each run its own dedup indexes
        build_inbox(layout)
    monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
    local_results = run_chain(instance, local_home)
    monkeypatch.setenv(STORAGE_ROOT_ENV, s3_root)
    s3_results = run_chain(instance, s3_home)
    local = Storage(local_home.storage)
    store = RefineryHome(home=str(s3_home.home), storage_root=s3_root).storage()
    assert isinstance(store, ObjectStorage)

    for source in SOURCES:
        assert s3_results[source].success and local_results[source].success
        checks = s3_results[source].get_asset_check_evaluations()
        assert len(checks) == 3 * len(STAGES) and all(c.passed for c in checks)
        for stage in STAGES:  # row for row, reason for reason, in order
            for rejected in (False, True):
                pd.testing.assert_frame_equal(
                    store.read(stage, source, rejected=rejected), local.read(stage, source, rejected=rejected)
                )
            assert store.provenance(stage, source) == local.provenance(stage, source)
            assert without_timing(store.read_stats(stage)[source]) == without_timing(
                local.read_stats(stage)[source]
            )
            # Only S3 holds the data: the s3 home has no storage folder; each partition holds its
            # manifest and exactly the parts it lists.
            folder = store.parts_path(stage, source)
            listed = {p["name"] for p in store.manifest(stage, source)["parts"]}
            found = {i.base_name for i in store.fs.get_file_info(pafs.FileSelector(folder))}
            assert found == listed | {"_manifest.json"}
    assert not s3_home.storage.exists()
    assert store.partitions("fuzzy_deduplicated") == list(SOURCES)
    fuzzy = store.read("fuzzy_deduplicated", "beta", rejected=True)
    assert fuzzy["duplicate_of"].tolist() == ["alpha/a3"]  # the chain did its work on S3, not only copied

    # DuckDB over the manifests' parts on S3 answers as over the local files.
    query = (
        "SELECT source, reason, count(*) AS n FROM rejected_heuristic_filtered GROUP BY 1, 2 ORDER BY 1, 2"
    )
    on_s3, on_disk = connect(s3_root).execute(query).df(), connect(local_home.storage).execute(query).df()
    pd.testing.assert_frame_equal(on_s3, on_disk)
    joined = "SELECT count(*) FROM fuzzy_deduplicated f JOIN clean_documents c USING (source, id)"
    assert (
        connect(s3_root).execute(joined).fetchone() == connect(local_home.storage).execute(joined).fetchone()
    )
    # `refinery sql` reads the same root from $REFINERY_STORAGE_ROOT.
    capsys.readouterr()
    assert cli_main(["--home", str(s3_home.home), "sql", query, "--format", "csv"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(capsys.readouterr().out)), on_disk)

    # A rerun on the same input: the same manifest versions, the old run's parts gone.
    versions = {s: store.manifest(s, "alpha")["version"] for s in STAGES}
    assert run_chain(instance, s3_home, ["alpha"])["alpha"].success
    assert {s: store.manifest(s, "alpha")["version"] for s in STAGES} == versions

    check_corpus_dedup_on_s3(instance, local_home, s3_home, s3_root, monkeypatch)
    check_model_stages_on_s3(instance, local_home, s3_home, s3_root, monkeypatch, capsys)
