"""Shuffle tasks whose first attempt kills its own worker process (SIGKILL), for the Ray tests.

Ray runs these by reference on the cluster's workers (this module is importable there): the first
attempt of a step, across the whole cluster, creates a marker (``O_EXCL``) naming its process and
dies before writing anything; Ray sees the worker lost and runs the task again elsewhere, where
the real task runs. The markers live beside the fixture's markers folder
(``$REFINERY_TEST_MARKERS``, set on every node), in a folder of their own.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from refinery.dedup.corpus_shuffle import pairs_task, table_task
from refinery.dedup.distributed_components import large_star_task


def _markers_folder(suffix: str) -> Path:
    markers = Path(os.environ["REFINERY_TEST_MARKERS"])
    folder = markers.parent / f"{markers.name}-{suffix}"
    folder.mkdir(exist_ok=True)
    return folder


def kills_folder() -> Path:
    return _markers_folder("dedup-kills")


def _first_caller(folder: Path, step: str) -> bool:
    """True for the first caller across the cluster (its pid recorded in ``folder/step``), False
    afterwards."""
    try:
        fd = os.open(folder / step, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def _die_first_time(step: str) -> None:
    if _first_caller(kills_folder(), step):
        os.kill(os.getpid(), signal.SIGKILL)


def pairs_task_dying_once(step: str, r: int, plan) -> dict:
    _die_first_time("pairs")
    return pairs_task(step, r, plan)


def large_star_task_dying_once(step: str, index: int, source: str, parts: int) -> dict:
    _die_first_time("large-star")
    return large_star_task(step, index, source, parts)


def claims_folder() -> Path:
    """Where the mid-write faults claim their first attempt (apart from :func:`kills_folder`, whose
    contents a test lists)."""
    return _markers_folder("dedup-mid-write")


def table_task_dying_mid_write(step: str, p: int, plan, stamp: dict, key_parts: int) -> dict:
    """The first attempt of piece 0's table task writes every file (its part straight into the
    table's folder on the object store, its key and claim files) and dies before its done marker."""
    if p == 0 and _first_caller(claims_folder(), "table-mid-write"):
        from refinery.dedup.marked_shuffle import TaskOutput

        def die(self, result):
            os.kill(os.getpid(), signal.SIGKILL)

        TaskOutput.commit = die  # this worker process dies at the commit, so nothing else sees it
    return table_task(step, p, plan, stamp, key_parts)
