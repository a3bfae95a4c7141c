"""Every config field of every asset (and of the resources) is set, off its default, by an options test.

The options tests (``tests/dagster/test_*_options.py``) run options through ``materialize`` and check
their effect; each declares what it sets, as ``ROUNDS`` (round → {asset or resource: options}) or
``OPTIONS`` (asset → [options, ...]). This test reads those declarations and the definitions'
own config schemas: an asset or resource that gains an option fails here until some options test
sets it. Two explicit lists say what is not exercised by an options test, each entry with why:

- ``NEEDS_CLUSTER``: options that need a real Ray cluster, Redis or a GPU, with the test that
  covers them elsewhere;
- ``NOT_YET``: options that no options test sets yet (issue 22's follow-up). It may only shrink:
  an entry that an options test covers, or that no longer exists, fails the test.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import dagster as dg

from assets import ALL_ASSETS
from definitions import defs

HERE = Path(__file__).resolve().parent

# Resource options that need what the local test run does not start. Covered elsewhere:
NEEDS_CLUSTER = {
    # tests/ray/ (Ray on loopback) and tests/dagster/test_portable_resources.py
    "engine": {
        "kind",
        "address",
        "workers",
        "slice_rows",
        "num_cpus",
        "connect_timeout_s",
        "node_ip_address",
    },
    # tests/dagster/test_concurrent_dedup.py, test_corpus_fuzzy_dedup.py (real redis-server, Redis Cluster)
    "dedup_index": {"backend", "redis_url", "namespace"},
    # GPU placement: a device machine (docs/scale-models.md); tests/ray/test_model_pools.py for the
    # actor pool's shape (ray_actors, ray_cpus_per_actor, ray_decode_cpus)
    "compute": {"device", "fp16", "num_gpus", "ray_actors", "ray_cpus_per_actor", "ray_decode_cpus"},
    # a Ray job through dagster-ray's Pipes client: tests/ray/test_ray_job.py (a head with its dashboard)
    "corpus_fuzzy_dedup": {"submit", "ray_dashboard", "ray_job_python", "ray_job_env"},
    # byte ranges of a large JSONL are cut on a distributed engine only:
    # tests/ray/test_ray_cluster.py::test_ingest_per_file_and_range_on_two_nodes_equals_the_local_engine
    "raw_sft": {"split_bytes"},
}

# Not yet set by an options test, with where each is exercised otherwise. Empty: every option is
# set by one (issue 22). It may only shrink: an option added without an options test fails above.
NOT_YET: dict[str, set[str]] = {}
# Set by hand in every run, not options a user chooses.
FIXED = {"refinery": {"home"}}


def asset_fields() -> dict[str, dict[str, object]]:
    """asset name -> {field: default} from each asset's run-config schema."""
    out: dict[str, dict[str, object]] = {}
    for asset in ALL_ASSETS:
        if not isinstance(asset, dg.AssetsDefinition):
            continue  # the observable reference_corpus: no config
        schema = asset.node_def.config_schema
        fields = getattr(schema.config_type, "fields", {}) if schema is not None else {}
        out[asset.key.to_user_string()] = {
            name: (f.default_value if f.default_provided else None) for name, f in fields.items()
        }
    return out


def resource_fields() -> dict[str, dict[str, object]]:
    out = {}
    for key, resource in defs.resources.items():
        fields = getattr(type(resource), "model_fields", {})
        out[key] = {name: f.default for name, f in fields.items() if name != "compute"}  # nested
    return out


def declared() -> dict[str, list[dict]]:
    """Every option set per asset/resource, from each options test's ROUNDS and OPTIONS."""
    found: dict[str, list[dict]] = {}
    for path in sorted(HERE.glob("test_*_options.py")):
        module = importlib.import_module(f"tests.dagster.{path.stem}")
        for plan in getattr(module, "ROUNDS", {}).values():
            for target, options in plan.items():
                found.setdefault(target, []).append(options)
        for target, rounds in getattr(module, "OPTIONS", {}).items():
            found.setdefault(target, []).extend(rounds)
    return found


def _listed(table: dict, target: str) -> set[str] | str:
    return table.get(target, set())


def test_every_asset_and_resource_option_is_exercised():
    sets = declared()
    assert {"clean_documents", "perplexity_scored", "language_routing"} <= set(sets)  # the modules load
    everything = {**asset_fields(), **resource_fields()}
    missing = {}
    for target, fields in everything.items():
        set_off_default = {
            name
            for options in sets.get(target, [])
            for name, value in options.items()
            if name in fields and value != fields[name]
        }
        excused = set()
        for table in (NEEDS_CLUSTER, NOT_YET, FIXED):
            listed = _listed(table, target)
            excused |= set(fields) if listed == "*" else listed
        left = set(fields) - set_off_default - excused
        if left:
            missing[target] = sorted(left)
    assert not missing, f"options no options test sets off their default (add them to a round): {missing}"


def test_declared_options_exist():
    """A round that names an option the asset does not have would pass without testing anything."""
    everything = {**asset_fields(), **resource_fields()}
    unknown = {
        target: sorted(set(name for o in rounds for name in o) - set(everything.get(target, {})))
        for target, rounds in declared().items()
    }
    assert not {t: u for t, u in unknown.items() if u}, unknown


def test_allow_lists_only_shrink():
    """NOT_YET lists only what exists and what no options test sets yet."""
    everything = {**asset_fields(), **resource_fields()}
    sets = declared()
    for target, listed in NOT_YET.items():
        assert target in everything, f"NOT_YET names {target}, which is no asset or resource"
        names = set(everything[target]) if listed == "*" else listed
        assert names <= set(everything[target]), (target, names - set(everything[target]))
        covered = {n for options in sets.get(target, []) for n in options} & names
        assert not covered, (
            f"{target}: {sorted(covered)} are now set by an options test: drop them from NOT_YET"
        )
    for target, listed in NEEDS_CLUSTER.items():
        assert listed <= set(everything[target]), (target, listed - set(everything[target]))
