"""The command-line paths a user runs: `dagster dev` on the workspace, `dagster asset materialize
-m definitions`, and `refinery` (partitions, sql)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from refinery.storage import Storage
from refinery_cli import launch
from tests.conftest import write_source
from tests.dagster.conftest import ALPHA, jsonl
from tests.dagster.dev_server import stop_process_group

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHAIN = "raw_documents,clean_documents,heuristic_filtered,exact_deduplicated,fuzzy_deduplicated"


@pytest.fixture
def cli_env(home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env["REFINERY_HOME"] = str(home.home)
    env["DAGSTER_HOME"] = str(home.dagster_home)
    saved = {k: os.environ.get(k) for k in ("REFINERY_HOME", "DAGSTER_HOME")}
    os.environ["DAGSTER_HOME"] = str(home.dagster_home)
    launch.prepare_environment(home)  # writes dagster.yaml with the pool limits
    for key, value in saved.items():  # leave this process's environment as it was
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return env


def run(args, env, timeout=240):
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_dagster_asset_materialize_from_the_repository_root(home, cli_env):
    write_source(
        home, "news", {"a.jsonl": jsonl([{"id": f"n{i}", "text": t} for i, t in enumerate(ALPHA[:4])])}
    )
    added = run([str(BIN / "refinery"), "partitions"], cli_env)
    assert added.returncode == 0 and "news" in added.stdout, added.stderr
    done = run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "definitions",
            "--partition",
            "news",
            "--select",
            CHAIN,
        ],
        cli_env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr + done.stdout
    assert Storage(home.storage).row_count("fuzzy_deduplicated", "news") == 4

    sql = run(
        [str(BIN / "refinery"), "sql", "SELECT id FROM fuzzy_deduplicated ORDER BY id", "--format", "json"],
        cli_env,
    )
    assert sql.returncode == 0 and [r["id"] for r in json.loads(sql.stdout)] == ["n0", "n1", "n2", "n3"]
    bad = run([str(BIN / "refinery"), "sql", "SELECT * FROM no_such_table"], cli_env)
    assert bad.returncode == 2 and "no_such_table" in bad.stderr


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dagster_dev_loads_the_workspace_without_warnings(home, cli_env, tmp_path):
    port = _port()
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-p", str(port), "-h", "127.0.0.1"],
            cwd=ROOT,
            env=cli_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        query = (
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError "
            "{ __typename ... on PythonError { message } ... on RepositoryLocation { repositories "
            "{ assetNodes { assetKey { path } } } } } } } } }"
        )
        deadline = time.monotonic() + 120
        entry = None
        while time.monotonic() < deadline:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    json.dumps({"query": query}).encode(),
                    {"Content-Type": "application/json"},
                )
                body = json.load(urllib.request.urlopen(request, timeout=5))
                entry = body["data"]["workspaceOrError"]["locationEntries"][0]
                if entry["loadStatus"] == "LOADED":
                    break
            except OSError:
                pass
            time.sleep(1)
        assert entry is not None and entry["loadStatus"] == "LOADED", log.read_text()[-2000:]
        location = entry["locationOrLoadError"]
        assert location["__typename"] == "RepositoryLocation", location
        keys = {n["assetKey"]["path"][0] for n in location["repositories"][0]["assetNodes"]}
        assert {"raw_documents", "pretrain_corpus", "corpus_report"} <= keys
    finally:  # what is asserted is the load and its log, not the shutdown: killed after a short grace
        stop_process_group(proc)
    warnings = [
        line
        for line in log.read_text().splitlines()
        if ("WARNING" in line or "Warning" in line)
        and "SupersessionWarning" not in line
        and "superseded" not in line
        and "return callback" not in line
    ]
    assert warnings == [], warnings


def test_refinery_run_prints_a_line_per_stage_and_logs_the_rest_to_a_file(home, cli_env):
    from refinery.sample.reference_sample import build_reference_sample
    from tests.dagster.conftest import build_inbox

    build_inbox(home)
    build_reference_sample(home.inbox_kind("reference"))
    command = [str(BIN / "refinery"), "run", "--source", "alpha", "--source", "beta"]
    done = run(command, cli_env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "DEBUG" not in out and "RUN_START" not in out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("  ok ")}
    assert {f"{s}[alpha]" for s in ("raw_documents", "clean_documents", "heuristic_filtered")} <= set(lines)
    raw = lines["raw_documents[alpha]"]
    assert " in → " in raw and " out" in raw and "malformed_json 1" in raw  # the broken JSONL line
    assert "▶ text_prefilter[alpha]" in out and "▶ text_models" in out
    log = Path(
        next(line for line in out.splitlines() if line.startswith("full Dagster log: ")).split(": ", 1)[1]
    )
    text = log.read_text()
    assert log.is_relative_to(home.home) and "DEBUG" in text and "STEP_SUCCESS" in text
    # libraries' stderr goes to the log, not the terminal (MiniLM's "Loading weights" bar appears when
    # torch loads the model: the ONNX backend's first export on a machine, or backend 'torch'); the
    # redirect itself is checked with decord's lines in the corrupt-video test below
    assert "Loading weights" not in done.stderr


STDERR_PROBE = """
import sys
from pathlib import Path
import decord
from refinery.paths import Layout
from refinery_cli import launch

layout = Layout.at(sys.argv[1])
with launch.stderr_to_log(layout) as log:
    print("a Refinery line")
    try:
        decord.VideoReader(sys.argv[2])
    except Exception as err:
        print("quarantined:", type(err).__name__)
print("after the runs", file=sys.stderr)
print("log:", log)
"""


def test_native_stderr_of_a_corrupt_video_goes_to_the_log_file(home, tmp_path):
    """decord and FFmpeg write about a corrupt video from C++ to file descriptor 2: during the runs
    of `refinery run`/`demo` that lands in the log file, and the terminal keeps Refinery's lines."""
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    done = subprocess.run(
        [sys.executable, "-c", STDERR_PROBE, str(home.home), str(corrupt)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "a Refinery line" in done.stdout and "quarantined: " in done.stdout
    assert done.stderr == "after the runs\n"  # restored after the block; nothing native leaked
    log = Path(done.stdout.split("log: ", 1)[1].strip())
    assert "ERROR opening" in log.read_text() and str(corrupt) in log.read_text()


def test_init_sets_the_dedup_pool_limit(home, cli_env):
    """dagster.yaml sets the default pool limit (1: the gpu pool); init gives dedup_index two slots."""
    shown = run([str(BIN / "dagster"), "instance", "concurrency", "get", "dedup_index"], cli_env)
    assert shown.returncode == 0, shown.stderr
    assert "2" in shown.stdout, shown.stdout
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        assert instance.event_log_storage.get_concurrency_info("dedup_index").slot_count == 2
        assert instance.global_op_concurrency_default_limit == 1
