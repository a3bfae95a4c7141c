"""fuzzy_deduplicated on an engine that signs on its workers: the signatures are written as parts by
``map_to_parts`` and the claimer streams them a part at a time. The local engine's map_to_parts
is the Ray engine's contract in one process (the loopback cluster's chain test covers Ray itself);
the decisions equal signing in the step, and the step never holds more than one part."""

import random

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from assets.text_stages import _fuzzy
from refinery import names
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
    random.Random(4).shuffle(texts)
    return pd.DataFrame({"id": [f"d{i:02d}" for i in range(len(texts))], "text": texts})


def run(home: Layout, engine: LocalEngine) -> StageContext:
    storage = Storage(home.storage)
    path = storage.path(names.EXACT_DEDUPLICATED, "src")
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(documents(), preserve_index=False), path, row_group_size=7)
    ctx = StageContext(
        spec=text.FUZZY_DEDUPLICATED,
        source="src",
        params=FuzzyDedupParams(),
        layout=home,
        storage=storage,
        engine=engine,
        resources=StageResources({"dedup_index": DedupIndexResource().plain()}),
    )
    outcome = execute_stage(ctx, _fuzzy)
    assert all(check.passed for check in outcome.checks)
    return ctx


def test_streamed_signature_parts_decide_as_signing_in_the_step(tmp_path):
    in_step = run(Layout.at(tmp_path / "step"), LocalEngine())
    on_parts = run(Layout.at(tmp_path / "parts"), SigningOnParts())
    for rejected in (False, True):
        got = on_parts.storage.read(names.FUZZY_DEDUPLICATED, "src", rejected=rejected)
        want = in_step.storage.read(names.FUZZY_DEDUPLICATED, "src", rejected=rejected)
        pd.testing.assert_frame_equal(got, want)
    assert len(on_parts.storage.read(names.FUZZY_DEDUPLICATED, "src", rejected=True)) >= 5
    parts = on_parts.metadata["signature_parts"].value
    assert parts["parts"] == 5 and parts["rows"] == 29 and parts["reused_from_an_earlier_attempt"] == 0
    assert on_parts.metadata["signature_rows_held_at_once"] <= 7  # one part, never the partition
    assert not list((on_parts.storage.root / "_staging").rglob("*.parquet"))  # removed once committed
