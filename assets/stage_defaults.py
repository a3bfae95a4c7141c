"""A deployment's own run-config defaults: ``$REFINERY_STAGE_DEFAULTS`` names a YAML (or JSON) file of
``{asset: {field: value}}`` that replaces the built-in default of those fields.

Why: the automation sensor launches every run with an empty run config (Dagster has no way to give
an automated run config: dagster-io/dagster#12955), so a deployment that wants, say, a longer DoReMi
training or another target set on every refresh had no say. With this file the asset's ``Config``
class itself carries the deployment's defaults, so automated runs, schedules, the CLI and the UI's
launchpad all start from them; a run's own config still overrides any field.

The file is read when the code location loads (every process that imports the assets reads the same
file). A field an asset does not have, a value its parameter model refuses, or an asset name that
matches no configurable asset fails the load with the reason, never silently.

    domain_weights:
      doremi_steps: 400
    heuristic_filtered:
      min_doc_words: 30
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError, create_model
from pydantic.fields import FieldInfo

ENV = "REFINERY_STAGE_DEFAULTS"
_configurable: set[str] = set()  # every asset whose config class asked for its defaults


class StageDefaultsError(ValueError):
    """The stage-defaults file cannot be applied (the message says which entry and why)."""


@functools.cache
def _load(path: str) -> dict[str, dict[str, Any]]:
    file = Path(path).expanduser()
    try:
        text = file.read_text()
    except OSError as err:
        raise StageDefaultsError(f"${ENV}={path}: cannot read it ({err})") from err
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise StageDefaultsError(f"${ENV}={path}: not valid {file.suffix or 'YAML'} ({err})") from err
    data = data or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise StageDefaultsError(f"${ENV}={path}: expected a mapping of asset name to {{field: value}}")
    return data


def configured() -> dict[str, dict[str, Any]]:
    """Every asset's defaults from ``$REFINERY_STAGE_DEFAULTS`` (empty when it is not set)."""
    path = os.environ.get(ENV)
    return _load(path) if path else {}


def with_defaults(config: type[BaseModel], params: type[BaseModel], asset: str) -> type[BaseModel]:
    """``config`` (the run-config class of ``params``) with the deployment's defaults for ``asset``,
    validated by ``params`` itself; ``config`` unchanged when the file has none for it."""
    _configurable.add(asset)
    overrides = configured().get(asset)
    if overrides is None:
        return config
    unknown = sorted(set(overrides) - set(params.model_fields))
    if unknown:
        raise StageDefaultsError(
            f"${ENV}: {asset} has no field {unknown}; its fields: {sorted(params.model_fields)}"
        )
    try:
        checked = params(**overrides)  # the library's own validation (types, ranges, validators)
    except ValidationError as err:
        raise StageDefaultsError(f"${ENV}: {asset}: {err}") from err
    fields: dict[str, Any] = {}
    for name in overrides:
        info = params.model_fields[name]
        fields[name] = (info.annotation, FieldInfo.merge_field_infos(info, default=getattr(checked, name)))
    return create_model(config.__name__, __base__=config, __doc__=config.__doc__, **fields)


def check_all_used() -> None:
    """Fail on entries that name no configurable asset (a typo would otherwise change nothing);
    called once every asset module has made its config classes."""
    unknown = sorted(set(configured()) - _configurable)
    if unknown:
        raise StageDefaultsError(
            f"${ENV}: no configurable asset named {unknown}; configurable: {sorted(_configurable)}"
        )
