"""The "Adding a stage" example (docs/adding-a-stage.md), executed as written: one library function,
one spec in the text pipeline's order and one line of wiring give a stage with config, checks and the
standard metadata."""

import re
from dataclasses import replace
from pathlib import Path

import dagster as dg

from assets import TEXT_PREFILTER
from refinery.kernel.spec import StageSpec
from refinery.stages import text
from refinery.storage import Storage
from tests.dagster.conftest import build_inbox, resources_for

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "adding-a-stage.md"


def readme_example() -> dict:
    section = GUIDE.read_text().split("# Adding a stage", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    # The block's step 2 is refinery/stages/text.py with the stage put in its order: it runs beside
    # copies of that module's specs as written there (no upstream), so the real ones stay as they are.
    namespace: dict = {
        name: replace(spec, upstream=None)
        for name, spec in vars(text).items()
        if isinstance(spec, StageSpec) and spec in text.STAGES
    }
    exec(compile(code, str(GUIDE), "exec"), namespace)
    return namespace


def test_the_readme_stage_materializes_with_checks_and_metadata(home, instance):
    example = readme_example()
    stage = example["short_filtered"]
    assert example["EXACT_DEDUPLICATED"].upstream == "short_filtered"  # the next stage reads it now
    build_inbox(home)
    instance.add_dynamic_partitions("text_source", ["alpha"])
    result = dg.materialize(
        [*TEXT_PREFILTER[:3], stage],
        partition_key="alpha",
        instance=instance,
        resources=resources_for(home),
        run_config={"ops": {"short_filtered": {"config": {"min_chars": 1500}}}},
    )
    assert result.success
    checks = [c for c in result.get_asset_check_evaluations() if c.asset_key.path == ["short_filtered"]]
    assert sorted(c.check_name for c in checks) == ["non_empty_text", "rows_accounted", "unique_ids"]
    assert all(c.passed for c in checks)
    storage = Storage(home.storage)
    kept, rejected = (
        storage.read("short_filtered", "alpha"),
        storage.read("short_filtered", "alpha", rejected=True),
    )
    upstream = storage.row_count("heuristic_filtered", "alpha")
    assert len(kept) + len(rejected) == upstream and len(rejected) > 0 and len(kept) > 0
    assert (kept["chars"] >= 1500).all() and set(rejected["reason"]) == {"too_short"}
    meta = result.asset_materializations_for_node("short_filtered")[0].metadata
    assert meta["rows_in"].value == upstream
    assert "too_short" in meta["removed_by_reason"].value
    assert "distribution_chars" in meta and meta["parameters"].value == {"min_chars": 1500}
    defs = dg.Definitions(assets=[stage], resources=resources_for(home))
    node = defs.resolve_asset_graph().get(dg.AssetKey("short_filtered"))
    assert [k.to_user_string() for k in node.parent_keys] == ["heuristic_filtered"]
    assert node.partitions_def.name == "text_source"
