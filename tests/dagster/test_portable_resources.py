"""Resources reach the library, and Ray workers, as plain values: each stage resource's ``plain()``
is a library object (a model loader, an index's or a client's configuration) that pickles and comes
back equal, so a stage's context travels to workers as it is."""

import pickle

import dagster as dg
import pytest

from refinery.kernel.spec import StageResources
from resources import build_resources

KEYS = ("language_routing", "kenlm", "dedup_index", "compute", "clip", "embedder", "quality_model")


def test_every_stage_resource_hands_the_library_a_plain_value_that_pickles():
    resources = build_resources()
    seen: dict = {}

    @dg.asset(required_resource_keys=set(KEYS))
    def probe(context: dg.AssetExecutionContext) -> None:
        for key in KEYS:
            plain = getattr(context.resources, key).plain()
            seen[key] = (plain, pickle.loads(pickle.dumps(plain)))

    assert dg.materialize([probe], resources={k: resources[k] for k in KEYS}).success
    for key, (plain, travelled) in seen.items():
        assert travelled == plain, key
        assert type(plain).__module__.startswith("refinery."), (key, type(plain))  # no Dagster object
    assert seen["language_routing"][1] == resources["language_routing"].routing()
    assert seen["clip"][1].compute == seen["embedder"][1].compute == seen["compute"][1]  # one device setting
    assert seen["dedup_index"][1].backend == resources["dedup_index"].backend


def test_stage_resources_name_what_a_stage_did_not_ask_for():
    given = StageResources({"compute": build_resources()["compute"].plain()})
    travelled = pickle.loads(pickle.dumps(given))
    assert travelled.compute == given.compute and travelled.keys() == ["compute"]
    with pytest.raises(AttributeError, match=r"'kenlm' is not among this stage's resources \['compute'\]"):
        _ = travelled.kenlm
