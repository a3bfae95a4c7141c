"""Every option of the mixing and scheduling assets (``domain_weights``, ``dataset_splits``,
``pretrain_mixture``, ``training_schedule``), through Dagster's ``materialize``.

The corpus is written as pretrain_corpus partitions directly (the token tests' documents, two
sources, with a ``genre`` column of three values the ``domain_column`` option names), and the
bundled target sample under a second name (``target_set``). Round one sets every weighting, split,
mixture and sequential-schedule option; round two the method list, manual weights and the curriculum.
The defaults' behaviour on the real chain is tests/dagster/test_mixing_schedule_assets.py's."""

from __future__ import annotations

import math
import shutil

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.mixing import domain_weights, pretrain_mixture
from assets.schedule import dataset_splits, training_schedule
from refinery.paths import Layout
from refinery.sample.target_sample import build_target_sample
from refinery.storage import Storage
from tests.dagster.conftest import resources_for
from tests.unit.token_helpers import corpus_texts

MIXING = [domain_weights, dataset_splits, pretrain_mixture, training_schedule]
GENRES = ["news", "fiction", "howto"]
WEIGHTS = {
    "domain_column": "genre",
    "use": "dsir",
    "target_set": "second",
    "dsir_num_buckets": 2048,
    "dsir_ngrams": [1],
    "dsir_smoothing": 0.5,
    "dsir_length_normalize": False,
    "dsir_resample_fraction": 0.5,
    "dsir_seed": 3,
    "doremi_steps": 10,
    "doremi_reference_steps": 12,
    "doremi_batch_per_domain": 2,
    "doremi_seq_len": 32,
    "doremi_d_model": 16,
    "doremi_n_layers": 1,
    "doremi_n_heads": 2,
    "doremi_lr": 0.01,
    "doremi_eta": 0.5,
    "doremi_smoothing": 0.01,
    "doremi_reference_weights": "natural",
    "doremi_max_bytes_per_domain": 20_000,
    "doremi_eval_fraction": 0.2,
    "doremi_eval_batches": 2,
    "doremi_threads": 1,
    "doremi_seed": 4,
}
SPLITS = {
    "fractions": {"train": 0.6, "validation": 0.2, "test": 0.2},
    "salt": "another-salt",
    "near_dup_threshold": 0.9,
    "num_perm": 64,
    "ngram": 3,
    "leakage_sample": 10,
    "seed": 2,
    "domain_column": "genre",
}
MIXTURE = {
    "token_budget": 3000,
    "weights": "uniform",
    "split": "validation",
    "within_domain": "importance",
    "warn_epochs": 1.0,
    "max_epochs": 3.0,
    "seed": 3,
}
SEQUENTIAL = {
    "strategy": "sequential",
    "docs_per_step": 3,
    "domain_order": ["news", "howto", "fiction"],
    "replay_ratio": 0.3,
    "shard_docs": 7,
    "row_group_docs": 2,
    "seed": 5,
}
MANUAL = {"news": 0.5, "howto": 0.25, "fiction": 0.25}
CURRICULUM = {
    "strategy": "curriculum",
    "pacing": "step",
    "pacing_start": 0.5,
    "pacing_stages": 2,
    "difficulty": "length",
}
DSIR_ONLY = {"domain_column": "genre", "methods": ["dsir"], "use": "dsir", "target_set": "second"}
ROUNDS: dict[str, dict] = {
    "one": {
        "domain_weights": WEIGHTS,
        "dataset_splits": SPLITS,
        "pretrain_mixture": MIXTURE,
        "training_schedule": SEQUENTIAL,
    },
    "two": {
        "domain_weights": DSIR_ONLY,
        "dataset_splits": {"domain_column": "genre"},
        "pretrain_mixture": {"manual_weights": MANUAL, "split": None},
        "training_schedule": CURRICULUM,
    },
}


def write_pretrain_corpus(layout: Layout) -> dict[str, int]:
    storage = Storage(layout.storage)
    sizes = {}
    for source, docs in corpus_texts().items():
        path = storage.path("pretrain_corpus", source)
        path.parent.mkdir(parents=True, exist_ok=True)
        n = len(docs)
        table = pa.table(
            {
                "id": [f"{source}-{i}" for i in range(n)],
                "text": pa.array(docs, pa.large_string()),
                "source": [source] * n,
                "file": ["docs.jsonl"] * n,
                "line": np.arange(1, n + 1, dtype=np.int64),
                "quality_score": np.linspace(0.5, 0.9, n),
                "genre": [GENRES[i % 3] for i in range(n)],
            }
        )
        pq.write_table(table, path)
        sizes[source] = n
    return sizes


def meta(result, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    layout = Layout.at(tmp_path_factory.mktemp("mixing-options") / "home")
    sizes = write_pretrain_corpus(layout)
    build_target_sample(layout.inbox_kind("target"), documents=30)
    shutil.move(layout.inbox_source("target", "target"), layout.inbox_source("target", "second"))
    results = {}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", list(sizes))
        for name, plan in ROUNDS.items():
            config = {"ops": {asset: {"config": options} for asset, options in plan.items()}}
            result = dg.materialize(
                MIXING, instance=instance, resources=resources_for(layout), run_config=config
            )
            assert result.success, name
            storage = Storage(layout.storage)
            tables = {a: pd.read_parquet(storage.root / a / f"{a}.parquet") for a in ROUNDS[name]}
            shards = sorted((storage.root / "training_schedule" / "shards" / "train").rglob("*.parquet"))
            tables["row_groups"] = [pq.ParquetFile(f).metadata.num_row_groups for f in shards]
            tables["shard_rows"] = [pq.ParquetFile(f).metadata.num_rows for f in shards]
            results[name] = (result, tables)
        yield layout, sum(sizes.values()), results


def test_parameters_are_recorded(rounds):
    _, _, results = rounds
    for name, plan in ROUNDS.items():
        result, _ = results[name]
        for asset, options in plan.items():
            recorded = meta(result, asset)["parameters"]
            assert {k: recorded[k] for k in options} == options, (name, asset)


def test_domain_weights_options(rounds):
    layout, documents, results = rounds
    result, tables = results["one"]
    m, table = meta(result, "domain_weights"), tables["domain_weights"].set_index("domain")
    assert set(table.index) == set(GENRES)  # domain_column: the genre column, not the source
    assert np.allclose(table["weight"], table["dsir"]) and not np.allclose(
        table["dsir"], table["doremi"]
    )  # use
    assert m["dsir_target_documents"] == 30  # target_set: the sample under its second name
    resampled = sum(int(r.split("|")[3]) for r in m["dsir_by_domain"].splitlines()[2:] if r.count("|") > 4)
    assert abs(resampled - 0.5 * documents) <= 1  # dsir_resample_fraction
    assert m["doremi_model_parameters"] < 20_000  # d_model 16, one layer (the default model: ~100k)
    trajectory = pd.read_parquet(
        layout.storage / "domain_weights_trajectory" / "domain_weights_trajectory.parquet"
    )
    assert trajectory["step"].max() + 1 == 10 if "step" in trajectory else len(trajectory) in (10, 30)
    # round two: dsir only, so no DoReMi weights
    result, tables = results["two"]
    assert "doremi_losses" not in meta(result, "domain_weights")
    assert "doremi" not in tables["domain_weights"] or tables["domain_weights"]["doremi"].isna().all()


def test_splits_and_mixture_options(rounds):
    _, _, results = rounds
    result, tables = results["one"]
    splits = tables["dataset_splits"]
    shares = splits["split"].value_counts() / len(splits)
    assert set(shares.index) == {"train", "validation", "test"} and abs(shares["train"] - 0.6) < 0.15
    mixture = tables["pretrain_mixture"]
    validation = splits[splits["split"] == "validation"]
    chosen = set(zip(validation["source"], validation["id"], strict=True))
    assert set(zip(mixture["source"], mixture["id"], strict=True)) <= chosen  # split: validation only
    m = meta(result, "pretrain_mixture")
    # the validation split is small: max_epochs 3 caps every domain below the 3,000-token budget
    assert m["tokens"] < 3000 and m["max_epochs_seen"] <= 3.0 + 1e-9
    assert m["weights_followed"] == pytest.approx(dict.fromkeys(GENRES, 1 / 3), abs=1e-5)
    assert "warn_epochs=1" in m["repetition_warnings"]
    # round two: the manual weights, from every split
    m = meta(results["two"][0], "pretrain_mixture")
    assert m["weights_followed"] == pytest.approx(MANUAL, abs=1e-5)
    assert len(results["two"][1]["pretrain_mixture"]) > len(mixture)


def test_schedule_options(rounds):
    _, _, results = rounds
    result, tables = results["one"]
    m = meta(result, "training_schedule")
    assert (m["strategy"], m["docs_per_step"]) == ("sequential", 3) and m["replay_documents"] > 0
    assert m["steps"] == math.ceil(m["train_documents"] / 3)
    assert m["splits"]["train"]["shards"] == math.ceil(m["splits"]["train"]["documents"] / 7)  # shard_docs
    phases = [r.split("|")[1:5] for r in m["phases"].splitlines()[2:] if r.count("|") > 5]
    firsts = [{d: int(n) for d, n in zip(["fiction", "howto", "news"], p[1:4], strict=True)} for p in phases]
    assert [max(f, key=f.get) for f in firsts] == ["news", "howto", "fiction"]  # domain_order
    assert max(tables["shard_rows"]) <= 7  # shard_docs
    assert all(g == math.ceil(r / 2) for g, r in zip(tables["row_groups"], tables["shard_rows"], strict=True))
    m = meta(results["two"][0], "training_schedule")
    assert (m["strategy"], m["difficulty_measure"]) == ("curriculum", "length")
