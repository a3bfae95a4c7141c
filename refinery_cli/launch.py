"""Driving the Dagster pipeline from the command line, on the persistent instance.

``refinery run`` and ``refinery demo`` use this: it registers the inbox sources as partitions
(what the sensor does), then executes the real jobs from ``definitions`` partition by partition,
in sorted order, so every run, materialization and check shows in the Dagster UI afterwards.
Kept out of the ``refinery`` library, which stays free of Dagster.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from refinery.names import DEDUP_POOL
from refinery.paths import Layout

# Dedup steps of two runs may claim at the same time (the claims are atomic): two, as many as runs.
POOL_LIMITS = {DEDUP_POOL: 2}

INSTANCE_YAML = """\
# Written by `refinery init`. Model steps (pool gpu) take one step at a time, the default limit of
# every pool; `refinery init` sets the dedup_index pool to 2 (claims are atomic, so that limit is
# only a throughput choice: `dagster instance concurrency set dedup_index N`). A crashed run gives
# its slot back after five minutes. At most two runs at once (a laptop's cores); raise it on a
# bigger machine.
concurrency:
  pools:
    granularity: op
    default_limit: 1
  runs:
    max_concurrent_runs: 2
run_monitoring:
  enabled: true
  free_slots_after_run_end_seconds: 300
telemetry:
  enabled: false
"""


def prepare_environment(layout: Layout) -> str:
    """Point REFINERY_HOME at the layout and DAGSTER_HOME at its instance (created if missing)."""
    os.environ["REFINERY_HOME"] = str(layout.home)
    dagster_home = os.environ.get("DAGSTER_HOME") or str(layout.dagster_home)
    os.makedirs(dagster_home, exist_ok=True)
    config = os.path.join(dagster_home, "dagster.yaml")
    if not os.path.exists(config):
        with open(config, "w") as fh:
            fh.write(INSTANCE_YAML)
        set_pool_limits(dagster_home)
    os.environ["DAGSTER_HOME"] = dagster_home
    return dagster_home


def set_pool_limits(dagster_home: str) -> None:
    """Give a new instance its per-pool limits (:data:`POOL_LIMITS`); ``dagster.yaml`` can only set
    the default one."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(dagster_home) as instance:
        for pool, limit in POOL_LIMITS.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)


def sync_partitions(layout: Layout, kind: str = "text") -> list[str]:
    """Add a partition for every valid inbox source not yet known to the instance."""
    from dagster import DagsterInstance

    from assets.partitions import partitions_of
    from refinery.inbox import scan

    partitions = partitions_of(kind)
    with DagsterInstance.get() as instance:
        known = set(instance.get_dynamic_partitions(partitions.name))
        new = sorted(set(scan(layout, kind, settle_seconds=0).ready) - known)
        if new:
            instance.add_dynamic_partitions(partitions.name, new)
    return new


_LOG_FILE: Path | None = None


def log_file(layout: Layout) -> Path:
    """This command's full Dagster debug log, ``$REFINERY_HOME/logs/refinery-<time>.log``."""
    global _LOG_FILE
    if _LOG_FILE is None or not _LOG_FILE.parent.is_relative_to(layout.home):
        folder = layout.home / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        _LOG_FILE = folder / f"refinery-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    return _LOG_FILE


@contextmanager
def stderr_to_log(layout: Layout) -> Iterator[Path]:
    """This process's standard error, appended to :func:`log_file` until the block ends.

    The runs' own lines go to standard output; what libraries write to standard error goes to the log
    beside Dagster's: a model loader's "Loading weights" bar, FFmpeg's and decord's lines about the
    sample's corrupt video (written by native code, so redirected at the file descriptor, which the
    DataLoader workers inherit too). Restored afterwards: an error of the command itself still shows.
    """
    path = log_file(layout)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with path.open("a", encoding="utf-8") as log:
            os.dup2(log.fileno(), 2)
            try:
                yield path
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _execute(layout: Layout, job, instance, name: str, **kwargs) -> bool:
    """One run: a header line, a line per stage (refinery_cli/progress.py), the outcome with its time; the
    debug log goes to :func:`log_file`."""
    from refinery_cli.progress import cli_loggers

    print(f"▶ {name}", flush=True)
    started = time.monotonic()
    result = job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={"loggers": cli_loggers(str(log_file(layout)))},
        tags={"refinery/launched_by": "refinery run"},
        **kwargs,
    )
    status = "done" if result.success else "FAILED"
    print(f"  {status} {name} in {time.monotonic() - started:.1f}s (run {result.run_id[:8]})", flush=True)
    return result.success


def run_partitioned_job(
    layout: Layout, kind: str, job_name: str, sources: Sequence[str] | None = None
) -> dict[str, bool]:
    """Run a partitioned job for each inbox source of ``kind``, in the order given (default: sorted).

    Dedup is first come, first served, so the order decides which copy of a duplicate is kept:
    list canonical sources first.
    """
    from dagster import DagsterInstance

    from definitions import defs
    from refinery.inbox import scan

    sync_partitions(layout, kind)
    chosen = list(sources) if sources else sorted(scan(layout, kind, settle_seconds=0).ready)
    outcome: dict[str, bool] = {}
    with DagsterInstance.get() as instance:
        job = defs.resolve_job_def(job_name)
        for source in chosen:
            name = f"{job_name}[{source}]"
            outcome[name] = _execute(layout, job, instance, name, partition_key=source)
    return outcome


def run_job(job_name: str, layout: Layout | None = None) -> dict[str, bool]:
    """Run an unpartitioned job (reports, mixing, schedules) on the persistent instance."""
    from dagster import DagsterInstance

    from definitions import defs

    with DagsterInstance.get() as instance:
        ok = _execute(layout or Layout.at(), defs.resolve_job_def(job_name), instance, job_name)
    return {job_name: ok}


def run_text_pipeline(
    layout: Layout,
    sources: Sequence[str] | None = None,
    report: bool = True,
    train_models: bool | None = None,
) -> dict[str, bool]:
    """Rule-based stages per source, the models once, the model-based stages per source, the report.

    The models learn from clean_documents of every source, so they train between the two halves.
    ``train_models``: None trains them only when missing; True retrains (after adding sources).
    """
    from refinery.quality.artifacts import missing_models

    outcome = run_partitioned_job(layout, "text", "text_prefilter", sources)
    if train_models or (train_models is None and missing_models(layout.home)):
        outcome.update(run_job("text_models", layout))
    if all(outcome.values()):
        outcome.update(run_partitioned_job(layout, "text", "text_quality", sources))
    if report:
        outcome.update(run_job("corpus_report_job", layout))
    return outcome
