"""$REFINERY_STAGE_DEFAULTS (assets/stage_defaults.py): the deployment's run-config defaults become the
defaults of the asset's Config class, validated by the library's parameter model; every mistake in the
file fails with its reason. The automation daemon test runs it through `dagster dev`."""

from __future__ import annotations

import json

import pytest

from assets import stage_defaults
from assets.factory import config_class
from refinery import names
from refinery.mixing.weights import DomainWeightsParams


def use(monkeypatch, tmp_path, content: str, suffix: str = ".yaml") -> None:
    path = tmp_path / f"defaults{suffix}"
    path.write_text(content)
    monkeypatch.setenv(stage_defaults.ENV, str(path))


def test_the_file_sets_defaults_and_a_run_config_still_overrides(monkeypatch, tmp_path):
    use(monkeypatch, tmp_path, "domain_weights:\n  doremi_steps: '12'\n  use: dsir\n")
    config = config_class(DomainWeightsParams, names.DOMAIN_WEIGHTS)
    assert config().doremi_steps == 12 and config().use == "dsir"  # coerced by the model: '12' -> 12
    assert config().doremi_d_model == DomainWeightsParams().doremi_d_model  # the rest as built in
    assert config(doremi_steps=3).doremi_steps == 3
    assert config.__name__ == "DomainWeightsConfig"
    # Another asset of the same parameters keeps the built-in defaults.
    assert config_class(DomainWeightsParams, "other").__name__ == "DomainWeightsConfig"
    assert config_class(DomainWeightsParams, "other")().doremi_steps == DomainWeightsParams().doremi_steps
    use(monkeypatch, tmp_path, json.dumps({"domain_weights": {"doremi_steps": 5}}), ".json")
    assert config_class(DomainWeightsParams, names.DOMAIN_WEIGHTS)().doremi_steps == 5


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("domain_weights:\n  doremi_step: 5\n", r"has no field \['doremi_step'\]"),
        ("domain_weights:\n  doremi_steps: many\n", "valid integer"),
        ("domain_weights:\n  methods: [dsir, magic]\n", "unknown methods"),
        ("- domain_weights\n", "expected a mapping"),
        ("domain_weights: [1\n", "not valid"),
    ],
)
def test_a_bad_file_fails_with_its_reason(monkeypatch, tmp_path, content, reason):
    use(monkeypatch, tmp_path, content)
    with pytest.raises(stage_defaults.StageDefaultsError, match=reason):
        config_class(DomainWeightsParams, names.DOMAIN_WEIGHTS)


def test_a_name_that_matches_no_asset_and_a_missing_file_fail(monkeypatch, tmp_path):
    use(monkeypatch, tmp_path, "domain_weigths:\n  doremi_steps: 5\n")
    with pytest.raises(
        stage_defaults.StageDefaultsError, match=r"no configurable asset named \['domain_weigths'\]"
    ):
        stage_defaults.check_all_used()
    monkeypatch.setenv(stage_defaults.ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(stage_defaults.StageDefaultsError, match="cannot read it"):
        stage_defaults.configured()
    monkeypatch.delenv(stage_defaults.ENV)
    stage_defaults.check_all_used()  # no file: nothing to check
