"""``refinery mcp`` driven by the MCP SDK's own client, as an agent would drive it.

One stdio session (the server started with --allow-runs and one root) does a whole job: list the
stages, add real files as a source, run the text chain, watch the runs, ask why a named document
was removed, query the result by SQL, search, sample the rejected rows, read the corpus report;
and makes the bad calls an agent makes (unknown stage, bad config, paths outside the roots, a
write through SQL). A second server, on streamable HTTP without --allow-runs, refuses a client
without the token and refuses to materialize.

The session runs once per module (``session`` fixture) and the tests assert on its transcript;
set REFINERY_AGENT_TRANSCRIPT=path to save the transcript (docs/agents.md is written from one).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from refinery.paths import Layout
from refinery.sample.reference_sample import build_reference_sample
from tests.unit.real_text import MODULES, _docstrings

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_PACKAGES = ("apt", "bash", "coreutils", "gzip", "tar", "sed", "grep", "dpkg")
TOKEN = "test-token-7f3a"
TOOLS = (
    "add_source", "corpus_report", "explain_document", "list_sources", "list_stages", "materialize",
    "recent_runs", "rejected_rows", "run_status", "search", "sql", "wait_for_run",
)  # fmt: skip


def build_corpus(folder: Path) -> dict:
    """Real text as files: stdlib module docstrings (one file each), Debian copyright files (as
    .txt) where the machine has them, and one docstring file copied under a second name."""
    folder.mkdir(parents=True)
    written = []
    for module in MODULES[:16]:
        import importlib

        docs = _docstrings(importlib.import_module(module))
        (folder / f"{module}.txt").write_text("\n\n".join(docs)[:20_000], encoding="utf-8")
        written.append(f"{module}.txt")
    for package in DEBIAN_PACKAGES:
        source = Path("/usr/share/doc") / package / "copyright"
        if source.is_file():
            shutil.copyfile(source, folder / f"copyright-{package}.txt")
            written.append(f"copyright-{package}.txt")
    # read after csv.txt (files are read in name order), so this copy is the one dedup removes
    shutil.copyfile(folder / "csv.txt", folder / "csv_copy.txt")
    return {
        "files": [*written, "csv_copy.txt"],
        "duplicate": "csv_copy.txt",
        "original": "csv.txt",
    }


def text_of(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


class Agent:
    """A client session that records every call and its answer (the transcript)."""

    def __init__(self, session: ClientSession):
        self.session, self.transcript = session, []

    async def call(self, tool: str, **arguments):
        result = await self.session.call_tool(tool, arguments)
        text = text_of(result)
        self.transcript.append(
            {"tool": tool, "arguments": arguments, "is_error": result.is_error, "text": text}
        )
        if result.is_error:
            return {"error": text}
        structured = result.structured_content
        if structured is not None:
            return structured.get("result", structured) if set(structured) == {"result"} else structured
        return json.loads(text) if text[:1] in "[{" else text


def server_env(layout: Layout) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(
        REFINERY_HOME=str(layout.home),
        DAGSTER_HOME=str(layout.dagster_home),
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    return env


async def agent_session(layout: Layout, root: Path, corpus: dict, outside: Path) -> dict:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "refinery_cli", "mcp", "--root", str(root), "--allow-runs"],
        env=server_env(layout),
        cwd=str(ROOT),
    )
    out: dict = {}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        agent = Agent(session)
        out["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
        out["stages"] = await agent.call("list_stages", group="text")
        out["add"] = await agent.call("add_source", paths=[str(root / "docs")], name="debian_docs")
        # bad calls
        out["outside"] = await agent.call("add_source", paths=[str(outside)], name="bad1")
        out["dotdot"] = await agent.call("add_source", paths=[str(root / "docs" / ".." / "..")], name="bad2")
        out["symlink"] = await agent.call("add_source", paths=[str(root / "escape")], name="bad3")
        out["unknown_stage"] = await agent.call(
            "materialize", target="no_such_stage", partition="debian_docs"
        )
        out["bad_config"] = await agent.call(
            "materialize", target="fuzzy_deduplicated", partition="debian_docs", config={"threshold": "high"}
        )
        out["sql_write"] = await agent.call("sql", query="CREATE TABLE t AS SELECT 1")
        out["sql_copy"] = await agent.call("sql", query="COPY (SELECT 1) TO 'x.parquet'")
        out["sql_file"] = await agent.call("sql", query="SELECT * FROM read_csv('/etc/passwd')")
        # the text chain, watched
        # docstrings hold code: fewer alphabetic words than Gopher's 0.8 asks of web prose
        out["runs"] = []
        for target, partition, config in (
            ("text_prefilter", "debian_docs", {"heuristic_filtered": {"min_alpha_words_ratio": 0.4}}),
            ("text_models", None, None),
            # the bundled reference corpus is generated prose: these score below its 10th percentile
            ("text_quality", "debian_docs", {"quality_scored": {"threshold": 0.45}}),
            ("corpus_report_job", None, None),
        ):
            started = await agent.call("materialize", target=target, partition=partition, config=config)
            assert "run_id" in started, started
            if target == "text_prefilter":
                out["early_status"] = await agent.call("run_status", run_id=started["run_id"], log_lines=5)
            done = await agent.call("wait_for_run", run_id=started["run_id"], timeout_s=300, log_lines=8)
            out["runs"].append(done)
        out["why"] = await agent.call("explain_document", source="debian_docs", document=corpus["duplicate"])
        out["kept"] = await agent.call("explain_document", source="debian_docs", document=corpus["original"])
        out["sql"] = await agent.call(
            "sql",
            query="SELECT file, quality_score, perplexity FROM pretrain_corpus ORDER BY file",
        )
        out["search"] = await agent.call("search", query="read and write comma-separated values", k=3)
        out["reasons_by_sql"] = await agent.call(
            "sql",
            query="SELECT reason, count(*) AS n FROM rejected_heuristic_filtered GROUP BY 1 ORDER BY 2 DESC",
        )
        out["rejected"] = await agent.call(
            "rejected_rows", stage="heuristic_filtered", source="debian_docs", limit=2
        )
        out["rejected_unknown"] = await agent.call("rejected_rows", stage="nonsense")
        out["report"] = await agent.call("corpus_report")
        out["sources"] = await agent.call("list_sources")
        out["recent"] = await agent.call("recent_runs", limit=4)
        out["no_such_document"] = await agent.call(
            "explain_document", source="debian_docs", document="nope.txt"
        )
        out["transcript"] = agent.transcript
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def http_session(url: str) -> dict:
    out: dict = {}
    async with httpx2.AsyncClient() as bare:
        response = await bare.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        out["no_token_status"] = response.status_code
        wrong = await bare.post(url, json={}, headers={"Authorization": "Bearer wrong"})
        out["wrong_token_status"] = wrong.status_code
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        agent = Agent(session)
        out["sql"] = await agent.call("sql", query="SELECT count(*) AS n FROM pretrain_corpus")
        out["materialize"] = await agent.call("materialize", target="text_prefilter", partition="debian_docs")
    return out


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    base = tmp_path_factory.mktemp("mcp")
    layout = Layout.at(base / "home")
    build_reference_sample(layout.inbox_kind("reference"))
    root = base / "allowed"
    corpus = build_corpus(root / "docs")
    outside = base / "secret"
    outside.mkdir()
    (outside / "notes.txt").write_text("private notes that no agent may ingest\n")
    (root / "escape").symlink_to(outside)
    started = time.monotonic()
    result = anyio.run(agent_session, layout, root, corpus, outside)
    result["seconds"] = time.monotonic() - started

    port = free_port()
    env = server_env(layout) | {"REFINERY_MCP_TOKEN": TOKEN}
    log = (base / "http.log").open("w")
    command = [sys.executable, "-m", "refinery_cli", "mcp", "--transport", "http"]
    server = subprocess.Popen(
        [*command, "--port", str(port), "--root", str(root)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, (base / "http.log").read_text()
                assert time.monotonic() < deadline, "HTTP server did not start"
                time.sleep(0.5)
        result["http"] = anyio.run(http_session, f"http://127.0.0.1:{port}/mcp")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    result.update(layout=layout, corpus=corpus, root=root)
    if path := os.environ.get("REFINERY_AGENT_TRANSCRIPT"):
        Path(path).write_text(json.dumps(result["transcript"], indent=1, default=str))
    return result


def error_of(answer) -> str:
    assert isinstance(answer, dict) and "error" in answer, f"expected a refusal, got {answer}"
    return answer["error"]


def test_every_tool_is_offered(session):
    assert session["tools"] == sorted(TOOLS)


def test_stages_come_with_their_config_schemas(session):
    stages = {s["stage"]: s for s in session["stages"]["stages"]}
    assert {"raw_documents", "heuristic_filtered", "fuzzy_deduplicated", "pretrain_corpus"} <= set(stages)
    assert all(s["group"] == "text" for s in stages.values())
    threshold = stages["fuzzy_deduplicated"]["config"]["threshold"]
    assert threshold["default"] == 0.8 and "Jaccard" in threshold["description"]
    jobs = {j["job"] for j in session["stages"]["jobs"]}
    assert {"text_prefilter", "text_models", "text_quality", "corpus_report_job"} <= jobs


def test_real_files_become_a_text_source(session):
    added, layout = session["add"], session["layout"]
    assert added["kind"] == "text" and added["source"] == "debian_docs"
    assert added["files"] == len(session["corpus"]["files"])
    folder = layout.inbox_source("text", "debian_docs")
    assert sorted(p.name for p in folder.iterdir()) == sorted(session["corpus"]["files"])
    assert not any(p.is_symlink() for p in folder.iterdir())  # copied


def test_paths_outside_the_roots_are_refused(session):
    assert "outside the allowed roots" in error_of(session["outside"])
    assert "'..'" in error_of(session["dotdot"])
    assert "symlink leads outside" in error_of(session["symlink"])
    inbox = session["layout"].inbox_kind("text")
    assert sorted(p.name for p in inbox.iterdir()) == ["debian_docs"]


def test_bad_stage_and_bad_config_are_refused_before_any_run(session):
    assert "unknown stage or job 'no_such_stage'" in error_of(session["unknown_stage"])
    message = error_of(session["bad_config"])
    assert "threshold" in message and "Float" in message


def test_sql_cannot_write_or_read_other_files(session):
    assert "refused: CREATE" in error_of(session["sql_write"])
    assert "refused: COPY" in error_of(session["sql_copy"])
    assert "/etc/passwd" in error_of(session["sql_file"])
    assert not (ROOT / "x.parquet").exists()


def test_the_text_chain_runs_and_is_watched(session):
    runs = session["runs"]
    assert [r["job"] for r in runs] == ["text_prefilter", "text_models", "text_quality", "corpus_report_job"]
    assert [r["status"] for r in runs] == ["SUCCESS"] * 4, [r["steps"] for r in runs]
    assert session["early_status"]["status"] in ("STARTING", "NOT_STARTED", "STARTED", "SUCCESS")
    prefilter = runs[0]
    assert all(state == "succeeded" for state in prefilter["steps"].values())
    assert prefilter["stages"]["raw_documents"]["rows_in"] == len(session["corpus"]["files"])
    stages = prefilter["stages"]
    heuristic, other = stages["heuristic_filtered"], stages["multilingual_filtered"]
    # Each side of the language routing counts the rows it took; together they take every cleaned row.
    assert heuristic["rows_in"] == heuristic["rows_out"] + heuristic["rows_rejected"]
    assert heuristic["rows_in"] + other["rows_in"] == stages["clean_documents"]["rows_out"]
    assert heuristic.get("rows_routed_elsewhere", 0) == other["rows_in"]
    assert prefilter["stages"]["heuristic_filtered"]["parameters"]["min_alpha_words_ratio"] == 0.4
    assert any("PIPELINE_SUCCESS" in line for line in prefilter["log_tail"])
    assert "pretrain_corpus" in runs[2]["stages"]


def test_why_a_named_document_was_removed(session):
    why = session["why"]["documents"]
    assert len(why) == 1 and why[0]["file"] == session["corpus"]["duplicate"]
    last = why[0]["stages"][-1]
    assert last["stage"] == "exact_deduplicated" and last["status"] == "removed"
    kept = session["kept"]["documents"][0]
    assert kept["file"] == session["corpus"]["original"]
    assert last["duplicate_of"] == f"debian_docs/{kept['id']}"
    assert why[0]["outcome"].startswith("removed by exact_deduplicated")
    assert [s["stage"] for s in why[0]["stages"]] == [
        "raw_documents",
        "clean_documents",
        "heuristic_filtered",
        "exact_deduplicated",
    ]


def test_the_result_is_queried_by_sql_search_and_rejected_rows(session):
    rows = session["sql"]
    assert rows["columns"] == ["file", "quality_score", "perplexity"] and rows["row_count"] > 0
    files = [r[0] for r in rows["rows"]]
    assert session["corpus"]["duplicate"] not in files
    hits = session["search"]["hits"]
    assert [h["rank"] for h in hits] == sorted(h["rank"] for h in hits) and len(hits) == 3
    assert all(h["source"] == "debian_docs" and h["status"] in ("final", "rejected", "pending") for h in hits)
    by_sql = {reason: n for reason, n in session["reasons_by_sql"]["rows"]}
    assert session["rejected"]["rejected_by_reason"] == by_sql
    assert 0 < len(session["rejected"]["sample"]) <= 2
    assert all(r["reason"] in by_sql for r in session["rejected"]["sample"])
    assert "no rejected rows for stage 'nonsense'" in error_of(session["rejected_unknown"])
    report = session["report"]
    assert "debian_docs" in report and "pretrain_corpus" in report


def test_http_needs_the_token_and_runs_need_the_permission(session):
    http = session["http"]
    assert http["no_token_status"] == 401 and http["wrong_token_status"] == 401
    assert http["sql"]["rows"] == [[session["sql"]["row_count"]]]
    assert "without permission to run" in error_of(http["materialize"])


def test_every_call_is_logged_with_its_arguments(session):
    log = session["layout"].home / "logs" / "mcp-calls.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    calls = session["transcript"]
    stdio = entries[: len(calls)]
    assert [e["tool"] for e in stdio] == [c["tool"] for c in calls]
    for entry, call in zip(stdio, calls, strict=True):  # as given, plus the defaults the SDK filled in
        assert entry["arguments"] == entry["arguments"] | call["arguments"], (entry, call)
    assert [e["outcome"] == "error" for e in stdio] == [c["is_error"] for c in calls]
    assert [e["tool"] for e in entries[len(calls) :]] == ["sql", "materialize"]  # the HTTP session


def test_sources_and_runs_are_listed(session):
    sources = session["sources"]
    assert sources["inbox"]["text"] == ["debian_docs"]
    assert {"raw_documents", "pretrain_corpus"} <= set(sources["stages_with_output"]["debian_docs"])
    assert set(sources["stages_with_output"]) == {"debian_docs"}  # not the report's table names
    recent = session["recent"]["runs"]
    assert [r["run_id"] for r in recent] == [r["run_id"] for r in reversed(session["runs"])]
    assert all(r["launched_by"] == "refinery mcp" and r["status"] == "SUCCESS" for r in recent)
    assert "no document with id or inbox file 'nope.txt'" in error_of(session["no_such_document"])
