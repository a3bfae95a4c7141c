"""Materializing a stage or job for an agent, and reading its run back from the instance.

Runs go to the persistent instance (``$DAGSTER_HOME``, the one ``dagster dev`` shows), each in a
child process (:mod:`refinery_cli.mcp_server.run_child`) with a run id chosen here, as ``refinery run`` does;
the server stays responsive while a run works. Status, per-step outcomes, per-stage counts (the
metadata every stage reports) and the log tail all come from the instance's event log, so runs
started elsewhere (the CLI, the UI, a sensor) can be watched the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from refinery.paths import Layout
from refinery_cli.mcp_server.stages import assets_defs

ASSET_JOB = "__ASSET_JOB"
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
ROOT = Path(__file__).resolve().parents[1]


class NotAllowed(PermissionError):
    """Materializing on a server started without the permission to run."""


@dataclass
class Launched:
    run_id: str
    process: subprocess.Popen
    log: Path
    target: str
    partition: str | None


class RunControl:
    def __init__(self, layout: Layout, defs: dg.Definitions, allow_runs: bool):
        self.layout, self.defs, self.allow_runs = layout, defs, allow_runs
        self.launched: dict[str, Launched] = {}

    # -- launching -------------------------------------------------------------------------------
    def _target(self, target: str) -> tuple[dg.JobDefinition, list[str]]:
        jobs = {j.name: j for j in self.defs.resolve_all_job_defs() if not j.name.startswith("__")}
        if target in jobs:
            return jobs[target], []
        stages = assets_defs(self.defs)
        if target in stages:
            return self.defs.resolve_implicit_global_asset_job_def(), [target]
        raise LookupError(
            f"unknown stage or job {target!r}; stages: {', '.join(sorted(stages))}; "
            f"jobs: {', '.join(sorted(jobs))}"
        )

    def run_config(self, job: dg.JobDefinition, stages: list[str], config: dict | None) -> dict:
        """The run config of a stage (its own fields) or of a job (``{stage: fields}``), validated."""
        config = config or {}
        if stages:
            ops = {assets_defs(self.defs)[stages[0]].op.name: {"config": config}} if config else {}
        else:
            by_stage = assets_defs(self.defs)
            unknown = [name for name in config if name not in by_stage]
            if unknown:
                raise ValueError(
                    f"config for a job is {{stage: {{field: value}}}}; {unknown} are not stages of the job"
                )
            ops = {by_stage[name].op.name: {"config": fields} for name, fields in config.items()}
        run_config = {"ops": ops} if ops else {}
        checked = job.get_subset(asset_selection={dg.AssetKey(s) for s in stages}) if stages else job
        try:
            dg.validate_run_config(checked, run_config)
        except dg.DagsterInvalidConfigError as err:
            problems = "; ".join(e.message for e in err.errors) or str(err)
            raise ValueError(f"invalid config for {stages[0] if stages else job.name}: {problems}") from None
        return run_config

    def _partition(self, job: dg.JobDefinition, stages: list[str], partition: str | None) -> None:
        partitions = assets_defs(self.defs)[stages[0]].partitions_def if stages else job.partitions_def
        if partitions is None:
            if partition is not None:
                raise ValueError(
                    f"{stages[0] if stages else job.name} is not partitioned: leave partition out"
                )
            return
        if partition is None:
            raise ValueError(f"{stages[0] if stages else job.name} is partitioned by source: give partition")
        from refinery.kinds import KINDS
        from refinery_cli import launch

        name = getattr(partitions, "name", None)
        kind = next(k for k, record in KINDS.items() if record.partitions == name)
        launch.sync_partitions(self.layout, kind)
        with dg.DagsterInstance.get() as instance:
            known = instance.get_dynamic_partitions(partitions.name)
        if partition not in known:
            raise LookupError(
                f"no {kind} source {partition!r} (inbox/{kind}/{partition}); known: {sorted(known)}. "
                "Add it with add_source"
            )

    def materialize(self, target: str, partition: str | None, config: dict | None) -> dict:
        if not self.allow_runs:
            raise NotAllowed(
                "this server was started without permission to run: restart it with "
                "`refinery mcp --allow-runs` to materialize stages"
            )
        job, stages = self._target(target)
        run_config = self.run_config(job, stages, config)
        self._partition(job, stages, partition)
        run_id = str(uuid.uuid4())
        log = self.layout.home / "logs" / f"mcp-run-{run_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "refinery_cli.mcp_server.run_child"]
        command += ["--job", job.name, "--run-id", run_id]
        command += [arg for s in stages for arg in ("--stage", s)]
        command += ["--partition", partition] if partition else []
        command += ["--config", json.dumps(run_config)]
        env = {**os.environ, "REFINERY_HOME": str(self.layout.home), "PYTHONPATH": _pythonpath()}
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.launched[run_id] = Launched(run_id, process, log, target, partition)
        return {
            "run_id": run_id,
            "target": target,
            "job": job.name,
            "partition": partition,
            "run_config": run_config,
        }

    # -- reading ---------------------------------------------------------------------------------
    def status(self, run_id: str, log_lines: int = 20) -> dict:
        with dg.DagsterInstance.get() as instance:
            run = instance.get_run_by_id(run_id)
            launched = self.launched.get(run_id)
            if run is None:
                if launched is None:
                    raise LookupError(f"no run {run_id!r} on this instance")
                code = launched.process.poll()
                state = "STARTING" if code is None else "FAILED_TO_START"
                return {"run_id": run_id, "status": state, "log_tail": _file_tail(launched.log, log_lines)}
            events = instance.all_logs(run_id)
        status = run.status.value
        if status not in TERMINAL and launched is not None and launched.process.poll() is not None:
            status = f"{status} (its process exited with code {launched.process.returncode})"
        out: dict[str, Any] = {
            "run_id": run_id,
            "job": run.job_name,
            "partition": run.tags.get("dagster/partition"),
            "status": status,
            "steps": _steps(events),
            "stages": _stage_counts(events),
            "log_tail": _event_tail(events, log_lines),
        }
        if launched is not None and launched.process.poll() not in (None, 0) and status == "SUCCESS":
            out["process_exit_code"] = launched.process.returncode
        return out

    def wait(self, run_id: str, timeout_s: float, log_lines: int = 20) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            current = self.status(run_id, log_lines)
            state = current["status"]
            if state in TERMINAL or state == "FAILED_TO_START" or "process exited" in state:
                return current
            if time.monotonic() >= deadline:
                current["note"] = f"still {state} after {timeout_s:.0f}s: call wait_for_run again"
                return current
            time.sleep(1.0)

    def recent_runs(self, limit: int = 10) -> list[dict]:
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs(limit=limit)
        return [
            {
                "run_id": r.run_id,
                "job": r.job_name,
                "partition": r.tags.get("dagster/partition"),
                "status": r.status.value,
                "launched_by": r.tags.get("refinery/launched_by"),
            }
            for r in runs
        ]


def _pythonpath() -> str:
    current = os.environ.get("PYTHONPATH")
    return str(ROOT) + (os.pathsep + current if current else "")


def _file_tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _steps(events) -> dict[str, str]:
    states: dict[str, str] = {}
    for entry in events:
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        name = event.event_type_value
        if name == "STEP_START":
            states[entry.step_key] = "running"
        elif name == "STEP_SUCCESS":
            states[entry.step_key] = "succeeded"
        elif name == "STEP_FAILURE":
            error = getattr(event.event_specific_data, "error", None)
            states[entry.step_key] = "failed" + (f": {root_cause(error)}" if error is not None else "")
        elif name == "STEP_SKIPPED":
            states[entry.step_key] = "skipped"
    return states


def _scalar(value) -> Any:
    raw = getattr(value, "value", value)
    if isinstance(raw, bool | int | float | str) and not (isinstance(raw, str) and len(raw) > 200):
        return raw
    if isinstance(raw, dict | list) and len(json.dumps(raw, default=str)) <= 2000:
        return raw
    return None


def _stage_counts(events) -> dict[str, dict]:
    """Each materialized stage's scalar metadata (rows in/out/rejected, removed by reason …)."""
    stages: dict[str, dict] = {}
    for entry in events:
        event = entry.dagster_event
        if event is None or event.event_type_value != "ASSET_MATERIALIZATION":
            continue
        materialization = event.event_specific_data.materialization
        kept = {}
        for key, value in materialization.metadata.items():
            scalar = _scalar(value)
            if scalar is not None:
                kept[key] = scalar
        stages[materialization.asset_key.to_user_string()] = kept
    return stages


def _event_tail(events, lines: int) -> list[str]:
    out = []
    for entry in events[-lines:]:
        stamp = time.strftime("%H:%M:%S", time.gmtime(entry.timestamp))
        step = f" [{entry.step_key}]" if entry.step_key else ""
        kind = entry.dagster_event.event_type_value if entry.dagster_event else "LOG"
        message = (entry.user_message or entry.message or "").strip().replace("\n", " ")
        error = getattr(getattr(entry.dagster_event, "event_specific_data", None), "error", None)
        if error is not None:
            message += f" — {root_cause(error)}"
        out.append(f"{stamp} {logging_level(entry.level)} {kind}{step} {message[:400]}")
    return out


def root_cause(error) -> str:
    """The innermost error of a Dagster error chain (the step wrapper says only which op failed)."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error.message.strip().splitlines()[0][:600] if error.message.strip() else error.cls_name


def logging_level(level: int) -> str:
    import logging

    return logging.getLevelName(level)
