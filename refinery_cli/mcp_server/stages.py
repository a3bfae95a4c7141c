"""The stages and jobs an agent may materialize, with their run-config schemas.

Read from the real ``Definitions``: each asset's ``Config`` class reaches Dagster as a config
field whose entries keep their types, defaults and the descriptions written in the parameter
models, so the schema an agent sees is the one a run is validated against.
"""

from __future__ import annotations

import json
from typing import Any

import dagster as dg


def _type_name(config_type) -> Any:
    kind = config_type.kind.name
    if kind == "NONEABLE":
        return f"{_type_name(config_type.inner_type)} | None"
    if kind == "ARRAY":
        return f"list[{_type_name(config_type.inner_type)}]"
    if kind in ("STRICT_SHAPE", "SHAPE", "PERMISSIVE_SHAPE", "SELECTOR"):
        return {name: _field(f) for name, f in config_type.fields.items()}
    if kind == "MAP":
        return f"dict[{_type_name(config_type.key_type)}, {_type_name(config_type.inner_type)}]"
    if kind == "SCALAR_UNION":
        return _type_name(config_type.scalar_type)
    if kind == "ENUM":
        return f"one of {[v.config_value for v in config_type.enum_values]}"
    return config_type.given_name or kind.lower()


def _field(field) -> dict:
    out: dict[str, Any] = {"type": _type_name(field.config_type), "required": field.is_required}
    if field.default_provided:
        out["default"] = json.loads(field.default_value_as_json_str)
    if field.description:
        out["description"] = field.description
    return out


def config_schema(assets_def: dg.AssetsDefinition) -> dict:
    """``{field: {type, required, default, description}}`` of the asset's run config (may be empty)."""
    field = assets_def.op.config_field
    if field is None or field.config_type.kind.name not in ("STRICT_SHAPE", "SHAPE", "PERMISSIVE_SHAPE"):
        return {}
    return {name: _field(f) for name, f in field.config_type.fields.items()}


def assets_defs(defs: dg.Definitions) -> dict[str, dg.AssetsDefinition]:
    """Materializable assets by name (single-key paths, as every Refinery stage is named)."""
    found = {}
    for key in defs.resolve_asset_graph().get_all_asset_keys():
        assets_def = defs.resolve_assets_def(key)
        if assets_def.is_executable:
            found[key.to_user_string()] = assets_def
    return found


def describe_stages(defs: dg.Definitions, group: str | None = None) -> list[dict]:
    out = []
    for name, assets_def in sorted(assets_defs(defs).items()):
        key = dg.AssetKey(name)
        stage_group = assets_def.group_names_by_key.get(key)
        if group is not None and stage_group != group:
            continue
        partitions = assets_def.partitions_def
        out.append(
            {
                "stage": name,
                "group": stage_group,
                "partitioned_by": getattr(partitions, "name", None) if partitions else None,
                "upstream": sorted(k.to_user_string() for k in assets_def.asset_deps.get(key, ())),
                "description": assets_def.descriptions_by_key.get(key),
                "config": config_schema(assets_def),
            }
        )
    return out


def describe_jobs(defs: dg.Definitions) -> list[dict]:
    out = []
    for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue
        partitions = job.partitions_def
        out.append(
            {
                "job": job.name,
                "description": job.description,
                "partitioned_by": getattr(partitions, "name", None) if partitions else None,
                "stages": sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys)
                if job.asset_layer
                else [],
            }
        )
    return out
