"""The whole graph as one snapshot: an accidental change to assets, deps, checks, pools, partitions,
jobs, sensors or schedules shows in review. Regenerate with REFINERY_UPDATE_SNAPSHOT=1."""

import itertools
import json
import os
from pathlib import Path

import dagster as dg

from definitions import defs
from refinery.stages import text

SNAPSHOT = Path(__file__).with_name("graph_snapshot.json")


def graph() -> dict:
    asset_graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(asset_graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = asset_graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "partitions": getattr(node.partitions_def, "name", None),
            "group": node.group_name,
            "pool": sorted(node.pools or []),
            "checks": sorted(c.name for c in node.check_keys),
            "kinds": sorted(node.kinds),
            "description": node.description,
            "op_tags": _op_tags(key),
            "automation": node.automation_condition.get_label() if node.automation_condition else None,
        }
    jobs = [j for j in defs.resolve_all_job_defs() if not j.name.startswith("__")]
    return {
        "assets": assets,
        "jobs": {j.name: sorted(k.to_user_string() for k in j.asset_layer.selected_asset_keys) for j in jobs},
        "sensors": sorted(s.name for s in defs.sensors or []),
        "schedules": {s.name: s.cron_schedule for s in defs.schedules or []},
        "resources": sorted(defs.resources or {}),
    }


def _op_tags(key) -> dict:
    """The tags of the op that materializes ``key`` (the k8s GPU request, where there is one)."""
    for assets_def in defs.assets or []:
        if isinstance(assets_def, dg.AssetsDefinition) and key in assets_def.keys:
            return dict(assets_def.op.tags)
    return {}


def test_graph_matches_snapshot():
    current = graph()
    if os.environ.get("REFINERY_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_text_chain_order_and_invariant_checks():
    assets = graph()["assets"]
    chain = list(text.TEXT_PREFILTER_STAGES)  # the rule-based stages, in the text pipeline's order
    for upstream, stage in itertools.pairwise(chain):
        assert assets[stage]["deps"] == [upstream]
    for stage in chain:
        assert assets[stage]["partitions"] == "text_source"
        assert assets[stage]["checks"] == ["non_empty_text", "rows_accounted", "unique_ids"]
    assert assets["exact_deduplicated"]["pool"] == assets["fuzzy_deduplicated"]["pool"] == ["dedup_index"]
    assert assets["corpus_report"]["partitions"] is None


# What `import definitions` must leave unloaded: the model, cluster, SQL and compiled-kernel
# libraries are imported where a step uses them, so every process that loads the definitions (the
# CLI, a code server) does not pay for them (torch alone is seconds).
NOT_IMPORTED_BY_DEFINITIONS = (
    "torch", "sklearn", "duckdb", "ray", "transformers", "onnxruntime", "tokenizers", "open_clip",
    "numba", "scipy", "lingua", "fasttext", "re2", "kenlm", "datasketch", "httpx", "rich", "redis",
    "boto3", "fsspec", "resiliparse", "trafilatura", "matplotlib", "sqlalchemy", "jinja2",
)  # fmt: skip


def test_definitions_leave_heavy_libraries_unloaded_and_the_loaded_heap_frozen() -> None:
    """In a fresh process: the libraries above are not imported by `import definitions`; what the
    import loaded is frozen (out of the collector's scans), and so is what is alive at exit (the
    handler registered before the import runs after refinery.process_heap's)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import atexit, gc, json, sys
        atexit.register(lambda: print("at exit", gc.get_freeze_count(), flush=True))
        import definitions
        loaded = gc.get_freeze_count()
        made_later = [[i] for i in range(50_000)]
        print(json.dumps({{"frozen": loaded, "modules": [m for m in {list(NOT_IMPORTED_BY_DEFINITIONS)!r}
                                                          if m in sys.modules]}}), flush=True)
        """
    )
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=repo)
    assert out.returncode == 0, out.stderr
    first, last = out.stdout.strip().splitlines()[-2:]
    answer = json.loads(first)
    assert answer["modules"] == []
    assert answer["frozen"] > 100_000  # the modules and the asset graph
    assert int(last.split()[-1]) > answer["frozen"] + 40_000  # and what was made after, at exit
