"""Dedup stays correct when Dagster runs partitions at the same time.

Four text partitions that share exact copies and one-word edits of the same articles (at the same
row positions) go through raw_documents → heuristic_filtered one after another; then four
processes, started behind a barrier, materialize ``exact_deduplicated`` for their partition at the
same time, and then ``fuzzy_deduplicated``, on one Dagster instance and one dedup index, three
rows per claim batch so the partitions' claims interleave. Four set-ups: ``materialize()`` in
each process against local SQLite indexes and against a real Redis, and the real
``text_prefilter`` job under the multiprocess executor (``REFINERY_ENVIRONMENT=cluster``: a
process per step) against a real Redis and against a real three-node Redis Cluster (the sharded
claims of ``REFINERY_DEDUP_BACKEND=redis-cluster``). No instance pool limits the dedup steps.

Afterwards: the dedup steps of the four runs overlapped in time (the race was real), no two kept
documents share a content hash or have an estimated Jaccard at or above the threshold, every
removed document names a kept owner, and a probe partition of one-word edits of every kept
document, run afterwards, is removed in full.
"""

from __future__ import annotations

import itertools
import shutil

import dagster as dg
import pandas as pd
import pytest

from assets import TEXT_PREFILTER
from refinery.dedup.exact import content_hash
from refinery.dedup.fuzzy import FuzzyDedupParams
from refinery.dedup.minhash import MinHasher, jaccard
from refinery.paths import Layout
from refinery.storage import Storage
from resources import DedupIndexResource, build_resources
from tests.conftest import write_source
from tests.dagster.concurrent_runs import DEDUP_STAGES, dedup_partition
from tests.dagster.conftest import jsonl
from tests.unit.dedup_race import build_partitions, one_word_edits, run_concurrently

UPSTREAM = ["raw_documents", "clean_documents", "heuristic_filtered"]
CASES = {
    "materialize-local": ("materialize", "local"),
    "materialize-redis": ("materialize", "redis"),
    "multiprocess-redis": ("multiprocess", "redis"),
    "multiprocess-redis-cluster": ("multiprocess", "redis-cluster"),  # claims spread over 3 shards
}
PARAMS = FuzzyDedupParams()


@pytest.fixture(params=list(CASES))
def case(request):
    mode, backend = CASES[request.param]
    fixture = {"redis": "redis_clean", "redis-cluster": "redis_cluster_clean"}.get(backend)
    url = request.getfixturevalue(fixture) if fixture else ""
    return mode, backend, url


@pytest.fixture
def shared_instance(home, monkeypatch):
    """One persistent instance (SQLite storage in DAGSTER_HOME) that every process opens."""
    home.dagster_home.mkdir(parents=True, exist_ok=True)
    (home.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))
    monkeypatch.setenv("REFINERY_HOME", str(home.home))
    with dg.DagsterInstance.get() as instance:
        yield instance


def _dedup(backend: str, url: str) -> DedupIndexResource:
    return DedupIndexResource(backend=backend, redis_url=url) if backend != "local" else DedupIndexResource()


def _materialize(
    instance,
    home,
    source: str,
    selection: list[str],
    dedup: DedupIndexResource,
    run_config: dict | None = None,
) -> None:
    result = dg.materialize(
        TEXT_PREFILTER,
        selection=selection,
        partition_key=source,
        instance=instance,
        resources=build_resources("local", home=str(home.home), dedup_index=dedup),
        run_config=run_config,
    )
    assert result.success


def _step_spans(instance, stage: str) -> pd.DataFrame:
    """Start and end of ``stage``'s step in every raced run (from the event log)."""
    rows = []
    for run in instance.get_runs(filters=dg.RunsFilter(tags={"race": stage})):
        assert run.status == dg.DagsterRunStatus.SUCCESS, (run.run_id, run.status)
        times = {
            e.dagster_event.event_type_value: e.timestamp
            for e in instance.all_logs(run.run_id)
            if e.is_dagster_event and e.step_key == stage
        }
        rows.append({"partition": run.tags["dagster/partition"], "start": times["STEP_START"],
                     "end": times["STEP_SUCCESS"]})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def upstream_once(tmp_path_factory) -> tuple[Layout, list[str]]:
    """The four partitions through the stages before dedup, once for the four cases (those stages
    use no dedup index, so every case starts from the same files); each case copies the home."""
    layout = Layout.at(tmp_path_factory.mktemp("upstream") / "home")
    partitions = build_partitions(per_kind=20)  # steps long enough to overlap
    sources = sorted(partitions)
    for source, frame in partitions.items():
        write_source(layout, source, {"docs.jsonl": jsonl(frame.to_dict("records"))})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", sources)
        for source in sources:  # not raced: only the dedup stages are
            _materialize(instance, layout, source, UPSTREAM, _dedup("local", ""))
    return layout, sources


def test_concurrent_partitions_keep_every_duplicate_once(home, case, shared_instance, upstream_once):
    mode, backend, url = case
    upstream, sources = upstream_once
    own = shutil.ignore_patterns(upstream.index.name, upstream.dagster_home.name)  # index: empty, per case
    shutil.copytree(upstream.home, home.home, ignore=own, dirs_exist_ok=True)
    shared_instance.add_dynamic_partitions("text_source", [*sources, "probe"])

    env = {
        "DAGSTER_HOME": str(home.dagster_home),
        "REFINERY_HOME": str(home.home),
        "REFINERY_ENVIRONMENT": "cluster" if mode == "multiprocess" else "local",
        "REFINERY_REDIS_URL": url,
        "REFINERY_DEDUP_BACKEND": backend if backend != "local" else "redis",
    }
    run_concurrently(dedup_partition, [(mode, env, backend, s, 3) for s in sources], timeout=900)

    for stage in DEDUP_STAGES:
        spans = _step_spans(shared_instance, stage)
        assert sorted(spans["partition"]) == sources
        # The claims raced: steps of different partitions ran at the same time. (All four at once
        # is not guaranteed on a loaded 2-core machine: a step takes a fraction of a second, about
        # what starting a run's resources can vary by.)
        rows = list(spans.itertuples(index=False))
        overlapping = [
            (a.partition, b.partition)
            for a, b in itertools.combinations(rows, 2)
            if a.start < b.end and b.start < a.end
        ]
        assert overlapping, f"no two {stage} steps overlapped:\n{spans}"

    storage = Storage(home.storage)
    read = lambda asset, s, rejected=False: storage.read(asset, s, rejected=rejected).assign(source=s)  # noqa: E731
    entering = pd.concat([read("heuristic_filtered", s) for s in sources], ignore_index=True)
    exact_kept = pd.concat([read("exact_deduplicated", s) for s in sources], ignore_index=True)
    exact_out = pd.concat([read("exact_deduplicated", s, True) for s in sources], ignore_index=True)
    kept = pd.concat([read("fuzzy_deduplicated", s) for s in sources], ignore_index=True)
    fuzzy_out = pd.concat([read("fuzzy_deduplicated", s, True) for s in sources], ignore_index=True)
    key = lambda frame: (frame["source"] + "/" + frame["id"]).tolist()  # noqa: E731

    # Nothing lost: every document that entered dedup is kept or removed once, with its reason.
    assert sorted(key(entering)) == sorted(key(kept) + key(exact_out) + key(fuzzy_out))
    assert set(exact_out["reason"]) <= {"exact_duplicate"} and set(fuzzy_out["reason"]) <= {"near_duplicate"}
    assert len(exact_out) and len(fuzzy_out), "the scenario has both kinds of duplicates"

    # Exact: each distinct content kept once over all partitions; every copy names a kept owner.
    hashes = [content_hash(t, "simplified") for t in exact_kept["text"]]
    assert len(hashes) == len(set(hashes))
    distinct = {content_hash(t, "simplified") for t in entering["text"]}
    assert set(hashes) == distinct
    assert set(exact_out["duplicate_of"]) <= set(key(exact_kept))

    # Fuzzy: no two kept documents are near-duplicates, every near-duplicate names a kept owner.
    hasher = MinHasher(PARAMS.num_perm, PARAMS.ngram, PARAMS.seed)
    signatures = hasher.signatures(kept["text"].tolist())
    close = [
        (key(kept)[i], key(kept)[j], float(jaccard(signatures[i], signatures[j])))
        for i, j in itertools.combinations(range(len(kept)), 2)
        if jaccard(signatures[i], signatures[j]) >= PARAMS.threshold
    ]
    assert close == []
    assert set(fuzzy_out["duplicate_of"]) <= set(key(kept))

    # A probe of one-word edits of every kept document, run afterwards, is removed in full. Which
    # documents were kept depends on who won each race, so an edit can by chance reproduce, word for
    # word, a document the fuzzy stage removed (its content is still in the exact index): that one
    # goes out as an exact duplicate of it; every other one as a near-duplicate of a kept document.
    probe = one_word_edits(kept)
    write_source(home, "probe", {"docs.jsonl": jsonl(probe.to_dict("records"))})
    # The probe tests dedup, so every edit must reach the dedup stages: its labels come from lingua,
    # which labels a one-word edit as it labelled the original; fastText (the default) can move a
    # borderline English document to the other-languages side when one word changes.
    lingua = {"ops": {"clean_documents": {"config": {"language_model": "lingua"}}}}
    _materialize(shared_instance, home, "probe", [*UPSTREAM, *DEDUP_STAGES], _dedup(backend, url), lingua)
    assert storage.row_count("heuristic_filtered", "probe") == len(probe)
    # The premise: after the rule stages each probe is still a near-duplicate of the kept document
    # it was made from (estimated Jaccard at the threshold or above).
    entered_probe = read("heuristic_filtered", "probe")
    origin = dict(zip(key(kept), kept["text"], strict=True))
    made_from = ["/".join(i.split("-", 2)[1:]) for i in entered_probe["id"]]
    pair_sigs = hasher.signatures([*entered_probe["text"], *(origin[k] for k in made_from)])
    similarity = (pair_sigs[: len(made_from)] == pair_sigs[len(made_from) :]).mean(axis=1)
    assert similarity.min() >= PARAMS.threshold, sorted(zip(similarity, made_from, strict=True))[:3]
    assert storage.row_count("fuzzy_deduplicated", "probe") == 0
    probe_exact = read("exact_deduplicated", "probe", True)
    probe_near = read("fuzzy_deduplicated", "probe", True)
    assert sorted(key(probe_exact) + key(probe_near)) == sorted(key(probe.assign(source="probe")))
    assert set(probe_exact["reason"]) <= {"exact_duplicate"}
    assert set(probe_near["reason"]) == {"near_duplicate"}
    owner_text = dict(zip(key(exact_kept), exact_kept["text"], strict=True))
    for text, owner in zip(probe_exact["text"], probe_exact["duplicate_of"], strict=True):
        assert content_hash(text, "simplified") == content_hash(owner_text[owner], "simplified")
    assert set(probe_near["duplicate_of"]) <= set(key(kept))
