"""Resources travel to Ray workers as their configuration: an initialized resource holds the run's
logger and does not pickle, so the ray engine rebuilds each one where the stage's maker runs."""

import pickle

import dagster as dg
from ray import cloudpickle

from refinery.engine.ray_engine import PortableResource, portable_value
from resources import build_resources

KEYS = ("language_routing", "kenlm", "dedup_index", "compute", "clip", "embedder")


def test_every_stage_resource_pickles_as_its_configuration_and_rebuilds():
    resources = build_resources()
    seen: dict = {}

    @dg.asset(required_resource_keys=set(KEYS))
    def probe(context: dg.AssetExecutionContext) -> None:
        for key in KEYS:
            live = getattr(context.resources, key)
            seen[key] = (live, pickle.loads(cloudpickle.dumps(portable_value(live))))

    assert dg.materialize([probe], resources={k: resources[k] for k in KEYS}).success
    for key, (live, travelled) in seen.items():
        assert isinstance(travelled, PortableResource), key
        rebuilt = travelled.build()
        assert type(rebuilt) is type(live)
        for name in type(live).model_fields:  # nested resources (clip's compute) rebuilt too
            value = getattr(rebuilt, name)
            want = getattr(live, name)
            if hasattr(want, "model_fields"):
                assert {f: getattr(value, f) for f in type(want).model_fields} == {
                    f: getattr(want, f) for f in type(want).model_fields
                }, (key, name)
            else:
                assert value == want, (key, name)
    routing = seen["language_routing"][1]
    assert routing.routing() == seen["language_routing"][0].routing()  # methods reach the rebuilt one
    assert portable_value(3) == 3 and portable_value({"a": 1}) == {"a": 1}
