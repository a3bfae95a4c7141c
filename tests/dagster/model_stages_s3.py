"""What tests/dagster/test_storage_root_options.py runs after the rule-based chain on both roots (so
the chain runs once per root): the model stages through Dagster with the ``refinery`` resource rooted
on an object store (moto's S3 server on loopback): reference_lm and quality_classifier (the classifier
reads its negatives from S3), perplexity_scored, quality_scored, document_embeddings (parts +
manifest, the bundled MiniLM), semantic_deduplicated, pretrain_corpus and vector_index; then
``refinery search``, the vector index's exact search and the ``vectors_documents`` view read from S3;
last ``corpus_report`` (its tables written to S3, its Markdown under the home) and ``refinery status``.
Every output equals a local root's, row for row, reason for reason, vector for vector (within float
tolerance)."""

import io

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from assets import TEXT_MODELS, TEXT_QUALITY, corpus_report
from refinery import names
from refinery.object_storage import ObjectStorage, open_storage
from refinery.paths import STORAGE_ROOT_ENV, Layout
from refinery.quality.embeddings import read_embeddings
from refinery.report import build_report
from refinery.retrieval.index import VectorIndex
from refinery.retrieval.search import search
from refinery.sample.reference_sample import build_reference_sample
from refinery.sql import connect
from refinery.storage import Storage
from refinery.table_store import read_frame
from refinery_cli.commands import main as cli_main
from tests.dagster.conftest import ALPHA, resources_for

SOURCES = ("alpha", "beta")
ROW_STAGES = [
    names.PERPLEXITY_SCORED,
    names.QUALITY_SCORED,
    names.SEMANTIC_DEDUPLICATED,
    names.PRETRAIN_CORPUS,
]
QUERY = " ".join(ALPHA[3].split()[:40])  # an alpha article's opening: it and its copies rank first
HIT_COLUMNS = ["rank", "source", "id", "stage", "status", "rejected_by", "reason"]


def run_models_chain(instance, layout: Layout) -> list[dg.ExecuteInProcessResult]:
    """After the rule-based chain: the two models, then the model stages per source, as `refinery
    run` does; the storage root comes from ``$REFINERY_STORAGE_ROOT`` (read by build_resources)."""
    build_reference_sample(layout.inbox_kind("reference"))
    results = [dg.materialize(TEXT_MODELS, instance=instance, resources=resources_for(layout))]
    for source in SOURCES:
        results.append(
            dg.materialize(
                TEXT_QUALITY, partition_key=source, instance=instance, resources=resources_for(layout)
            )
        )
    return results


def check_model_stages_on_s3(
    instance, local_home: Layout, s3_home: Layout, s3_root: str, monkeypatch, capsys
):
    """The model stages on both homes (whose rule-based chain has run), then every assertion."""
    monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
    local_results = run_models_chain(instance, local_home)
    monkeypatch.setenv(STORAGE_ROOT_ENV, s3_root)
    s3_results = run_models_chain(instance, s3_home)
    local, store = Storage(local_home.storage), open_storage(s3_root)
    assert isinstance(store, ObjectStorage)
    for result in (*local_results, *s3_results):
        checks = result.get_asset_check_evaluations()
        assert result.success and checks and all(c.passed for c in checks)
    assert not s3_home.storage.exists()  # only S3 holds the data

    for source in SOURCES:
        for stage in ROW_STAGES:  # row for row, reason for reason, scores within float tolerance
            for rejected in (False, True):
                pd.testing.assert_frame_equal(
                    store.read(stage, source, rejected=rejected),
                    local.read(stage, source, rejected=rejected),
                    check_exact=False,
                    rtol=1e-5,
                )
        on_s3, on_disk = read_embeddings(store, source), read_embeddings(local, source)
        assert (on_s3.ids, on_s3.text_hashes, on_s3.model) == (
            on_disk.ids,
            on_disk.text_hashes,
            on_disk.model,
        )
        np.testing.assert_allclose(on_s3.vectors, on_disk.vectors, atol=1e-5)
        # The embeddings are a partition of parts on S3: exactly the parts its manifest lists.
        folder = store.parts_path(names.DOCUMENT_EMBEDDINGS, source)
        listed = {p["name"] for p in store.manifest(names.DOCUMENT_EMBEDDINGS, source)["parts"]}
        found = {i.base_name for i in store.fs.get_file_info(pafs.FileSelector(folder))}
        assert found == listed | {"_manifest.json"}
    kept = {s: store.row_count(names.PRETRAIN_CORPUS, s) for s in SOURCES}
    assert 0 < sum(kept.values()) < sum(store.row_count(names.CLEAN_DOCUMENTS, s) for s in SOURCES)

    # The vector index was built from S3's parts; search answers as on a local root.
    index = VectorIndex.at(s3_home)
    assert index.partitions() == list(SOURCES)
    assert set(index.status(store)["state"]) == {"fresh"}

    answers = {}
    for home, root in ((local_home, None), (s3_home, s3_root)):
        if root:
            monkeypatch.setenv(STORAGE_ROOT_ENV, root)
        else:
            monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
        answers[root] = [search(QUERY, 4, home=home.home, exact=exact) for exact in (False, True)]
    for on_s3, on_disk in zip(answers[s3_root], answers[None], strict=True):
        assert on_s3["id"].tolist()[0] == "a3" and on_s3["status"].tolist()[0] == "final"
        pd.testing.assert_frame_equal(on_s3[HIT_COLUMNS], on_disk[HIT_COLUMNS])
        np.testing.assert_allclose(on_s3["score"], on_disk["score"], atol=1e-5)

    # `refinery search` reads the root from $REFINERY_STORAGE_ROOT ($REFINERY_STORAGE_ROOT is s3's now).
    capsys.readouterr()
    assert cli_main(["--home", str(s3_home.home), "search", QUERY, "--k", "4", "--format", "csv"]) == 0
    shown = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert shown["id"].tolist() == answers[s3_root][0]["id"].tolist()
    joined = (
        "SELECT h.rank, p.id FROM vector_hits h JOIN pretrain_corpus p USING (source, id) ORDER BY h.rank"
    )
    assert (
        cli_main(
            ["--home", str(s3_home.home), "search", QUERY, "--k", "4", "--sql", joined, "--format", "csv"]
        )
        == 0
    )
    final = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert final["id"].tolist() == shown.loc[shown["status"] == "final", "id"].tolist()

    # vectors_documents over the manifests' parts answers as over the local files.
    query = (
        "SELECT source, count(*) AS n, round(sum(array_inner_product(embedding, embedding)), 3) AS norms "
        "FROM vectors_documents GROUP BY 1 ORDER BY 1"
    )
    on_s3, on_disk = connect(s3_root).execute(query).df(), connect(local_home.storage).execute(query).df()
    pd.testing.assert_frame_equal(on_s3, on_disk)
    assert on_s3["n"].tolist() == [store.row_count(names.QUALITY_SCORED, s) for s in SOURCES]

    # Re-embedding the same rows keeps the manifest's version: the index stays fresh, the old parts go.
    version = store.manifest(names.DOCUMENT_EMBEDDINGS, "alpha")["version"]
    embeddings = next(a for a in TEXT_QUALITY if a.key.to_user_string() == names.DOCUMENT_EMBEDDINGS)
    again = dg.materialize(
        [embeddings], partition_key="alpha", instance=instance, resources=resources_for(s3_home)
    )
    assert again.success
    assert store.manifest(names.DOCUMENT_EMBEDDINGS, "alpha")["version"] == version
    folder = store.parts_path(names.DOCUMENT_EMBEDDINGS, "alpha")
    assert len(store.fs.get_file_info(pafs.FileSelector(folder))) == 2  # one part and the manifest
    assert set(index.status(store)["state"]) == {"fresh"}

    # The report over both sources on S3: its tables and Markdown equal the local root's report
    # (the asset on a local root is tested with the automation condition: test_sensor_schedule).
    monkeypatch.setenv(STORAGE_ROOT_ENV, s3_root)
    report = dg.materialize([corpus_report], instance=instance, resources=resources_for(s3_home))
    assert report.success
    want = build_report(local)
    for name, frame in (("stages", want.stages), ("reasons", want.reasons)):
        on_s3 = read_frame(store, names.CORPUS_REPORT, name)
        assert len(on_s3)
        pd.testing.assert_frame_equal(on_s3, frame)
    text = (s3_home.reports / "corpus_report.md").read_text()
    assert text == want.markdown() and "alpha, beta" in text
    meta = report.asset_materializations_for_node(names.CORPUS_REPORT)[0].metadata
    assert meta["final_documents"].value == sum(kept.values())
    assert {names.PRETRAIN_CORPUS, names.CORPUS_REPORT} <= set(meta["sql_views"].value)
    assert "duckdb_catalog" not in meta and not (s3_home.reports / "catalog.duckdb").exists()
    capsys.readouterr()  # `refinery status` prints the report from $REFINERY_STORAGE_ROOT (S3's now)
    assert cli_main(["--home", str(s3_home.home), "status"]) == 0
    assert capsys.readouterr().out.strip() == text.strip()
