"""docs/options.md: every option of every stage and resource, generated from the definitions.

The prose pages explain the options that matter most; this page lists all of them, read from the
same run-config schemas a run is validated against (each asset's ``Config`` class, each
resource's fields), so the documentation cannot name an option that does not exist or leave one
out. ``tests/dagster/test_options_reference.py`` fails when the page is stale; regenerate it with

    python -m refinery_cli.options_reference            # writes docs/options.md
"""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path

import dagster as dg

PAGE = Path(__file__).resolve().parents[1] / "docs" / "options.md"
NESTED = {"compute"}  # a resource field that is another resource (listed on its own)

HEADER = """# Every option of every stage and resource

Generated from the definitions by `python -m refinery_cli.options_reference`; do not edit by hand
(`tests/dagster/test_options_reference.py` fails when it is stale). The topic pages explain what the
options do together ([text pipeline](text-pipeline.md), [language](language.md), [dedup](dedup.md),
[LLM](llm.md), [multimodal](multimodal.md), [SFT](sft.md), [mixing](mixing.md),
[tokens](tokens.md), [scale](scale.md), [scale-models](scale-models.md)).

A stage's options go in its run config (`ops: {<stage>: {config: {<option>: <value>}}}`, in the UI's
launchpad, `dagster asset materialize -c`, `--config-json` or `refinery run --config`); a
resource's are set where the definitions build it (`resources/__init__.py`, or
`REFINERY_*` environment variables where the resource names one). Every option below is set off
its default by a test through Dagster (`tests/dagster/test_*_options.py`;
`tests/dagster/test_option_coverage.py` checks that none is left out).
"""


def _cell(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(value: object) -> str:
    return f"`{_cell(value)}`" if value != "" else "`''`"


def stage_rows(assets_def: dg.AssetsDefinition) -> list[tuple[str, str, str, str]]:
    """(option, type, default, description) of an asset's run config, in the Config class's order."""
    from refinery_cli.mcp_server.stages import config_schema

    rows = []
    for name, field in config_schema(assets_def).items():
        kind = field["type"] if isinstance(field["type"], str) else "object"
        if field.get("default") is not None:  # Dagster makes every field with a default Noneable
            kind = kind.removesuffix(" | None")
        default = _default(field["default"]) if "default" in field else "required"
        rows.append((name, kind, default, field.get("description", "")))
    return rows


def _annotation(annotation: object) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def resource_rows(resource: dg.ConfigurableResource) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, field in type(resource).model_fields.items():
        if name in NESTED:
            continue
        default = field.default
        rows.append((name, _annotation(field.annotation), _default(default), field.description or ""))
    return rows


def _table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    out = ["| option | type | default | description |", "|---|---|---|---|"]
    out += [f"| `{n}` | {_cell(t)} | {d} | {_cell(desc)} |" for n, t, d, desc in rows]
    return out


def render(defs: dg.Definitions | None = None) -> str:
    """The page, from ``defs`` (the project's definitions by default)."""
    if defs is None:
        from definitions import defs
    from refinery_cli.mcp_server.stages import assets_defs

    stages = assets_defs(defs)
    by_group: dict[str, list[str]] = {}
    for name, assets_def in stages.items():
        by_group.setdefault(assets_def.group_names_by_key.get(dg.AssetKey(name)) or "default", []).append(
            name
        )
    lines = [HEADER, "## Stages", ""]
    for group in sorted(by_group):
        lines += [f"### Group `{group}`", ""]
        for name in sorted(by_group[group]):
            rows = stage_rows(stages[name])
            lines.append(f"#### `{name}`")
            lines.append("")
            lines += _table(rows) if rows else ["No options."]
            lines.append("")
    lines += ["## Resources", ""]
    for key, resource in sorted(defs.resources.items()):
        doc = " ".join((type(resource).__doc__ or "").split("\n\n")[0].split())
        lines += [f"### `{key}`", ""]
        if doc:
            lines += [doc, ""]
        rows = resource_rows(resource)
        lines += _table(rows) if rows else ["No options."]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: typing.Sequence[str] = ()) -> int:
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
