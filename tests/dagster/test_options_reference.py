"""The documentation names only options that exist, and leaves none out.

- docs/options.md lists every option of every stage and resource, generated from the definitions'
  own schemas (refinery_cli/options_reference.py): it must be current.
- Every option the prose pages and the README name where they say what to set must exist: the
  run configs they show (YAML blocks with ``ops:``/``resources:``, ``--config-json``, inline
  ``ops: {...}``), their option tables (a header ``setting``/``field``/``option`` under "the `x`
  resource", or ``| `stage` config |``), "the `x` resource (`a`, `b: 1`, …)" and
  "`option: value` on `stage`".
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import yaml

from refinery_cli.options_reference import PAGE, render
from tests.dagster.test_option_coverage import asset_fields, resource_fields

ROOT = Path(__file__).resolve().parents[2]
PAGES = [p for p in sorted((ROOT / "docs").glob("*.md")) if p != PAGE] + [ROOT / "README.md"]
# Stages that a guide builds as its example (they exist once a reader has followed it).
EXAMPLE_STAGES = {"short_filtered"}  # docs/adding-a-stage.md
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def options() -> dict[str, set[str]]:
    return {target: set(fields) for target, fields in {**asset_fields(), **resource_fields()}.items()}


def test_the_options_page_is_current():
    assert PAGE.read_text() == render(), (
        "docs/options.md is stale: regenerate it with `python -m refinery_cli.options_reference`"
    )


def test_the_options_page_lists_every_option():
    page = PAGE.read_text()
    for target, names in options().items():
        section = page.split(f"`{target}`\n", 1)
        assert len(section) == 2, f"{target} has no section in docs/options.md"
        body = section[1].split("\n#", 1)[0]
        rows = re.findall(r"^\| `([^`]+)` \|.*\| (.*) \|$", body, flags=re.M)
        assert {name for name, _ in rows} == names - {"compute"}, target
        assert not [name for name, text in rows if not text.strip()], (
            f"{target}: options without a description"
        )


# -- what the prose pages name ------------------------------------------------------------------
def _run_configs(text: str) -> list[dict]:
    """Every run config a page shows: fenced YAML, --config-json, inline `ops: {...}`."""
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        for payload in re.findall(r"--config-json '(\{.*?\})'", block, flags=re.S):
            found.append(json.loads(payload))
        if re.search(r"^\s*(ops|resources):", block, flags=re.M):
            try:
                loaded = yaml.safe_load(textwrap.dedent(block))
            except yaml.YAMLError:
                continue  # a shell transcript with a YAML-looking line
            if isinstance(loaded, dict):
                found.append(loaded)
    for inline in re.findall(r"`((?:ops|resources): \{[^`]*\})`", text):
        found.append(yaml.safe_load("{" + inline + "}"))
    return found


def _named_in_run_configs(text: str) -> list[tuple[str, str]]:
    out = []
    for config in _run_configs(text):
        for section in ("ops", "resources"):
            for target, body in (config.get(section) or {}).items():
                for name in ((body or {}).get("config") or {}) if isinstance(body, dict) else {}:
                    out.append((target, name))
    return out


def _named_in_tables(text: str) -> list[tuple[str, str]]:
    out = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        header = re.match(r"^\| *(setting|field|option|`(\w+)` config) *\|", line)
        if not header or not lines[i + 1 : i + 2] or not lines[i + 1].startswith("|---"):
            continue
        target = header.group(2)
        if target is None:  # "the `x` resource" just above the table
            above = "\n".join(lines[max(0, i - 6) : i])
            named = re.findall(r"`(\w+)` resource", above)
            if not named:
                continue  # a command's options (docs/agents.md), not a resource's
            target = named[-1]
        for row in lines[i + 2 :]:
            if not row.startswith("|"):
                break
            first = row.split("|")[1]
            out += [(target, name) for name in re.findall(r"`(\w+)`", first)]
    return out


def _named_inline(text: str) -> list[tuple[str, str]]:
    out = []
    for target, inside in re.findall(r"`(\w+)` resource \((`[^()]*)\)", text):
        for snippet in re.findall(r"`([^`]+)`", inside):
            name = re.match(r"(\w+)(:|$)", snippet)
            if name:
                out.append((target, name.group(1)))
    for name, target in re.findall(r"`(\w+): [^`]+` on `(\w+)`", text):
        out.append((target, name))
    return out


def documented() -> dict[str, list[tuple[str, str]]]:
    out = {}
    for page in PAGES:
        text = page.read_text()
        out[page.name] = _named_in_run_configs(text) + _named_in_tables(text) + _named_inline(text)
    return out


def test_the_parsers_find_what_the_pages_show():
    """Guards the check itself: the forms it reads are found where the pages use them."""
    found = documented()
    assert ("llm", "api_key_env") in found["llm.md"] and ("llm", "backoff_s") in found["llm.md"]
    assert ("clean_documents", "language_max_chars") in found["language.md"]
    assert ("compute", "ray_decode_cpus") in found["scale-models.md"]
    assert ("training_tokens", "grad_accumulation") in found["tokens.md"]
    assert ("raw_sft", "dedup_key") in found["sft.md"]
    assert ("heuristic_filtered", "c4_rewrite_lines") in found["running.md"]
    assert ("clean_documents", "label_language") in found["text-pipeline.md"]
    assert ("language_routing", "min_language_score") in found["text-pipeline.md"]


def test_every_documented_option_exists():
    known = options()
    wrong = {}
    for page, named in documented().items():
        for target, name in named:
            if target in EXAMPLE_STAGES:
                continue
            if target not in known:
                wrong.setdefault(page, []).append(f"{target} (no such stage or resource).{name}")
            elif name not in known[target]:
                wrong.setdefault(page, []).append(f"{target}.{name}")
    assert not wrong, f"the docs name options that do not exist: {wrong}"
