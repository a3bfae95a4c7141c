"""sft_checked's distributed path (refinery.sft.check_plan: rule flags and prompt signatures written
as parts by the engine's workers, claims in order in the step with those signatures, each row then
checked against the recorded outcome) decides what the in-process checker decides, row for row,
reason for reason, on the sample's sources in turn."""

import pandas as pd
import pytest

from refinery.engine.local import LocalEngine
from refinery.kernel.ingest import ingest_with_reader
from refinery.paths import Layout
from refinery.sample.sft_sample import build_sft_sample
from refinery.sft.check import SftChecker, SftCheckParams
from refinery.sft.check_plan import DecidedDedup, claim_in_order, new_plan_folder, rule_parts
from refinery.sft.dedup import SftPromptDeduper, open_group_indexes
from refinery.sft.reader import SftIngestParams, SftReader
from refinery.sft.rules import SftRules
from refinery.storage import Storage


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    home = Layout.at(tmp_path_factory.mktemp("sft") / "home")
    build_sft_sample(home.inbox_kind("sft"), seed=5, records_per_source=24)
    storage = Storage(home.storage)
    for source in ("alpaca", "chat", "preference"):
        reader = SftReader(home.inbox_source("sft", source), source, SftIngestParams(batch_rows=7))
        ingest_with_reader(reader, storage, "raw_sft", {})
    return storage


def _frames(result):
    return result.kept.reset_index(drop=True), result.rejected.reset_index(drop=True)


def test_rules_on_workers_and_claims_in_the_step_decide_as_in_process(raw, tmp_path):
    params = SftCheckParams()
    rules = SftRules(params)
    here, planned = Layout.at(tmp_path / "here"), Layout.at(tmp_path / "planned")
    reasons: set[str] = set()
    for source in ("alpaca", "chat", "preference"):  # in turn: later sources meet earlier claims
        frame = raw.read("raw_sft", source)
        with SftPromptDeduper.claiming(
            open_group_indexes("local", here, "", "t", params), source, params
        ) as d:
            want = SftChecker(rules, d)(frame)
        location = raw.require("raw_sft", source)
        columns = raw.schema("raw_sft", source).names
        outcomes = rule_parts(LocalEngine(), location, columns, params, tmp_path / "rules" / source)
        again = rule_parts(LocalEngine(), location, columns, params, tmp_path / "again" / source)
        flags = again.reader.take_flagged(len(frame))[0]
        assert flags.tolist() == [r is None for r in rules.apply(frame)[1]]
        folder = new_plan_folder(tmp_path / "plans", source, "x")
        indexes = open_group_indexes("local", planned, "", "t", params)
        with SftPromptDeduper.claiming(indexes, source, params) as d:
            claimed = claim_in_order(raw, "raw_sft", source, outcomes, d, folder, batch_rows=5)
        assert claimed == int(flags.sum())
        got = SftChecker(rules, DecidedDedup(folder))(frame)
        for g, w in zip(_frames(got), _frames(want), strict=True):
            pd.testing.assert_frame_equal(g, w, check_dtype=False)
        reasons |= set(want.rejected["reason"])
    assert {"exact_duplicate", "near_duplicate"} <= reasons and len(
        reasons
    ) >= 4  # dedup and rules both decided
    dup = raw.read("raw_sft", "alpaca").head(3)
    with pytest.raises(RuntimeError, match="no dedup outcome"):
        DecidedDedup(folder).decide(dup)  # a record the plan never saw is an error, not a keep
