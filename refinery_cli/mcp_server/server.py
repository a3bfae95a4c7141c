"""The MCP server: Refinery's tools for an agent, on stdio or streamable HTTP.

Every tool call is logged with its arguments (:class:`refinery.agent.calllog.CallLog`); a refused
call comes back to the agent as a tool error whose text says why (unknown stage, invalid config,
path outside the roots, a write through SQL, runs not permitted) so it can correct itself.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from refinery.agent.calllog import CallLog
from refinery.agent.roots import Roots
from refinery.paths import Layout

INSTRUCTIONS = """\
Refinery turns raw corpora into training data; every stage is a Dagster asset partitioned by source.
A session: list_stages (the text group first), add_source (files on this machine into the inbox),
materialize the text jobs for the source (text_prefilter, then text_models once, then text_quality,
then corpus_report_job), wait_for_run, then read the result: sql, search, rejected_rows,
explain_document, corpus_report. Only files under the server's roots can be added."""

MAX_WAIT_SECONDS = 300


@dataclass
class Settings:
    home: str | None = None
    roots: list[str] = field(default_factory=list)
    allow_runs: bool = False
    call_log: str | None = None


def _tool(log: CallLog, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as an async tool: run in a worker thread, logged, its failures turned into tool errors."""

    @functools.wraps(fn)
    async def wrapper(**kwargs):
        started = time.monotonic()
        try:
            result = await anyio.to_thread.run_sync(functools.partial(fn, **kwargs))
        except Exception as err:
            message = f"{type(err).__name__}: {err}"
            log.record(fn.__name__, kwargs, "error", time.monotonic() - started, message)
            raise ToolError(message) from err
        log.record(fn.__name__, kwargs, "ok", time.monotonic() - started)
        return result

    wrapper.__signature__ = inspect.signature(fn)
    return wrapper


def build_server(settings: Settings) -> MCPServer:
    from definitions import defs
    from refinery_cli import launch

    layout = Layout.at(settings.home)
    launch.prepare_environment(layout)
    roots = Roots.of(settings.roots)
    log = CallLog(Path(settings.call_log) if settings.call_log else layout.home / "logs" / "mcp-calls.jsonl")
    tools = Tools(layout, roots, defs, settings.allow_runs)
    server = MCPServer(name="refinery", instructions=INSTRUCTIONS, log_level="WARNING")
    for name in TOOL_NAMES:
        method = getattr(tools, name)
        server.add_tool(_tool(log, method), name=name, description=inspect.getdoc(method))
    return server


TOOL_NAMES = (
    "list_stages",
    "list_sources",
    "add_source",
    "materialize",
    "run_status",
    "wait_for_run",
    "recent_runs",
    "sql",
    "search",
    "rejected_rows",
    "explain_document",
    "corpus_report",
)


class Tools:
    """The tools, as plain methods (their docstrings are what the agent reads)."""

    def __init__(self, layout: Layout, roots: Roots, defs, allow_runs: bool):
        from refinery_cli.mcp_server.runs import RunControl

        self.layout, self.roots, self.defs = layout, roots, defs
        self.runs = RunControl(layout, defs, allow_runs)

    def list_stages(self, group: str | None = None) -> dict:
        """The stages (Dagster assets) and jobs, with each stage's config schema: every field's type,
        default and description. group: only stages of one group (text, sft, image_text, video, …)."""
        from refinery_cli.mcp_server.stages import describe_jobs, describe_stages

        stages = describe_stages(self.defs, group)
        if group is not None and not stages:
            groups = sorted({s["group"] for s in describe_stages(self.defs) if s["group"]})
            raise LookupError(f"no stage in group {group!r}; groups: {groups}")
        return {"stages": stages, "jobs": describe_jobs(self.defs), "runs_allowed": self.runs.allow_runs}

    def list_sources(self) -> dict:
        """The inbox sources of each kind, and the stages that already hold output for each."""
        from refinery.agent.sources import KINDS
        from refinery.storage import Storage

        storage = Storage(self.layout.storage)
        materialized: dict[str, list[str]] = {}
        for stage in sorted(p.name for p in self.layout.storage.glob("*") if p.is_dir() and p.name[0] != "_"):
            for source in storage.partitions(stage):
                materialized.setdefault(source, []).append(stage)
        inbox = {}
        for kind in KINDS:
            folder = self.layout.inbox_kind(kind)
            if folder.is_dir():
                inbox[kind] = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name[0] != ".")
        known = {source for sources in inbox.values() for source in sources}
        materialized = {source: stages for source, stages in materialized.items() if source in known}
        return {"inbox": inbox, "stages_with_output": materialized, "roots": self.roots.describe()}

    def add_source(self, paths: list[str], name: str, kind: str | None = None, mode: str = "copy") -> dict:
        """Add files or folders already on this machine as a new inbox source named `name`.
        paths: absolute paths inside the server's roots (others, `..` and symlinks leading out are
        refused). kind: text, sft, image_text, video, reference or target; left out, it is detected
        from the files. mode: copy (default) or link (symlinks, no second copy)."""
        from refinery.agent.sources import add_source

        return add_source(self.layout, self.roots, paths, name, kind, mode).as_dict()

    def materialize(self, target: str, partition: str | None = None, config: dict | None = None) -> dict:
        """Start a run: target is a stage (one asset) or a job; partition is the source for
        partitioned ones. config: a stage's fields ({"threshold": 0.7}) or, for a job,
        {stage: {field: value}}; validated before the run starts. Returns the run id at once:
        follow it with wait_for_run or run_status. Needs a server started with --allow-runs."""
        return self.runs.materialize(target, partition, config)

    def run_status(self, run_id: str, log_lines: int = 20) -> dict:
        """A run's status, each step's outcome, each materialized stage's counts (rows in, out,
        rejected, by reason) and the last log lines."""
        return self.runs.status(run_id, min(max(log_lines, 0), 500))

    def wait_for_run(self, run_id: str, timeout_s: float = 120, log_lines: int = 20) -> dict:
        """Wait until the run ends (or timeout_s, at most 300), then the same as run_status."""
        return self.runs.wait(run_id, min(max(timeout_s, 0), MAX_WAIT_SECONDS), min(max(log_lines, 0), 500))

    def recent_runs(self, limit: int = 10) -> dict:
        """The latest runs on the instance, newest first, whoever launched them."""
        return {"runs": self.runs.recent_runs(min(max(limit, 1), 100))}

    def sql(self, query: str, max_rows: int = 100) -> dict:
        """Read-only SQL (DuckDB) over the catalog: a view per stage (`pretrain_corpus`, …) and per
        stage's rejected rows (`rejected_heuristic_filtered`, with `reason`, `reason_detail`). Only
        SELECT/EXPLAIN; list the views with SELECT table_name FROM information_schema.tables."""
        from refinery.agent.readonly_sql import run_query

        return run_query(self.layout, query, min(max(max_rows, 1), 10_000))

    def search(self, query: str, k: int = 5, collection: str = "documents") -> dict:
        """Similarity search: the k documents nearest to the query text, with the stage each has
        reached (final, rejected with its reason, pending) and its scores."""
        from refinery.retrieval.search import search

        hits = search(query, max(1, min(k, 100)), home=self.layout.home, collection_name=collection)
        keep = [c for c in hits.columns if c not in ("query", "embedding", "raw", "meta", "image")]
        records = hits[keep].to_dict("records")
        return {"query": query, "hits": [{key: _jsonable(v) for key, v in r.items()} for r in records]}

    def rejected_rows(
        self, stage: str, source: str | None = None, reason: str | None = None, limit: int = 5
    ) -> dict:
        """The rows a stage removed: counts by reason, and a sample (optionally of one source and
        one reason) with each row's reason, detail and scores."""
        from refinery.agent.documents import rejected_sample

        return rejected_sample(self.layout, stage, source, reason, min(max(limit, 1), 100))

    def explain_document(self, source: str, document: str) -> dict:
        """A document's path through the stages of its kind and, if it was removed, which stage
        removed it and why (reason, measured value, the kept duplicate). document: its id, or its
        inbox file (path in the source folder, or file name)."""
        from refinery.agent.documents import explain_document

        return explain_document(self.layout, source, document)

    def corpus_report(self) -> str:
        """The corpus report (markdown): documents and tokens per stage and source, removal reasons."""
        from refinery.report import build_report
        from refinery.storage import Storage

        return build_report(Storage(self.layout.storage)).markdown()


def _jsonable(value: Any) -> Any:
    """A search hit's value as JSON carries it: numpy scalars and arrays unwrapped, NaN as null,
    long texts and lists shortened."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, str) and len(value) > 300:
        return value[:300] + "…"
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value[:16]] + (["…"] if len(value) > 16 else [])
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value


def roots_from_env() -> list[str]:
    raw = os.environ.get("REFINERY_MCP_ROOTS", "")
    return [p for p in raw.split(os.pathsep) if p]
