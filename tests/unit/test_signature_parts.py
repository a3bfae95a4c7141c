"""exact_ and fuzzy_deduplicated on an engine with workers (refinery.dedup.claim_plan): the keys
(content hashes, signatures) are written as parts by ``map_to_parts``, the step claims a part at a
time and writes each part's outcomes, and the rows are written from those outcomes. The local
engine's map_to_parts is the Ray engine's contract in one process (the loopback cluster's chain
test covers Ray itself); the decisions equal hashing or signing in the step, and the step never
holds more than one part."""

import random

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.text_stages import _exact, _fuzzy
from refinery.dedup.exact import ExactDedupParams
from refinery.dedup.fuzzy import FuzzyDedupParams
from refinery.engine.local import LocalEngine
from refinery.kernel.execute import execute_stage
from refinery.kernel.spec import StageContext, StageResources
from refinery.paths import Layout
from refinery.sample import prose
from refinery.stages import text
from refinery.storage import Storage
from resources.dedup_index import DedupIndexResource


class SigningOnParts(LocalEngine):
    """The local engine, flagged as distributed: makers compute their first pass with map_to_parts."""

    distributed = True
    slice_rows = 7


def documents() -> pd.DataFrame:
    rng = random.Random(3)
    articles = [prose.article(rng, "history", paragraphs=2) for _ in range(20)]
    texts = articles + [
        prose.near_duplicate(a, random.Random(i), edits=2) for i, a in enumerate(articles[:9])
    ]
    texts += [articles[3], articles[11], articles[3].upper()]  # exact copies (the last up to case)
    random.Random(4).shuffle(texts)
    return pd.DataFrame({"id": [f"d{i:02d}" for i in range(len(texts))], "text": texts})


STAGES = {
    "exact": (text.EXACT_DEDUPLICATED, ExactDedupParams, _exact),
    "fuzzy": (text.FUZZY_DEDUPLICATED, FuzzyDedupParams, _fuzzy),
}


def run(home: Layout, engine: LocalEngine, kind: str) -> StageContext:
    spec, params, make = STAGES[kind]
    storage = Storage(home.storage)
    path = storage.path(spec.upstream, "src")
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(documents(), preserve_index=False), path, row_group_size=7)
    ctx = StageContext(
        spec=spec,
        source="src",
        params=params(),
        layout=home,
        storage=storage,
        engine=engine,
        resources=StageResources({"dedup_index": DedupIndexResource().plain()}),
    )
    outcome = execute_stage(ctx, make)
    assert all(check.passed for check in outcome.checks)
    return ctx


@pytest.mark.parametrize("kind", ["exact", "fuzzy"])
def test_keys_on_parts_and_claims_per_part_decide_as_in_the_step(tmp_path, kind):
    in_step = run(Layout.at(tmp_path / "step"), LocalEngine(), kind)
    on_parts = run(Layout.at(tmp_path / "parts"), SigningOnParts(), kind)
    name = in_step.spec.name
    for rejected in (False, True):
        got = on_parts.storage.read(name, "src", rejected=rejected)
        want = in_step.storage.read(name, "src", rejected=rejected)
        pd.testing.assert_frame_equal(got, want)
    removed = on_parts.storage.read(name, "src", rejected=True)
    assert len(removed) >= (3 if kind == "exact" else 5)
    plan = on_parts.metadata["claims_plan"].value
    assert plan["parts"] == 5 and plan["rows_claimed"] == 32 and plan["removed"] == len(removed)
    assert plan["key_parts_reused_from_an_earlier_attempt"] == 0
    assert plan["rows_held_at_once"] <= 7  # one part, never the partition
    assert not list((on_parts.storage.root / "_staging").rglob("*.parquet"))  # removed once committed
