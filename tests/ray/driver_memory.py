"""How much memory the Dagster process tree holds while corpus_fuzzy_dedup runs on a Ray cluster.

:func:`write_corpus` puts ``docs`` short documents (a tenth of them near-copies) in the
exact_deduplicated partitions of a fresh home, as the upstream chain would leave them, so the
measurement costs no upstream stages. :func:`materialize_measured` runs ``dagster asset materialize``
for corpus_fuzzy_dedup and samples the RSS of its whole process tree (the CLI, its step processes)
every 50 ms: the cluster's Ray workers are not in that tree. ``code`` points the Dagster process at
another checkout (e.g. the code before the shuffle) to measure it the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from refinery import names
from refinery.paths import Layout
from refinery.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
_VOCABULARY = (
    "the of and to in is was for on that with as by at from his an were are which this be or has had "
    "river city north south music school church station village family series album county league "
    "water house world party light stone field garden market paper winter summer"
)
WORDS = np.array(_VOCABULARY.split(" "))


def write_corpus(home: Layout, docs: int, sources: int = 4, seed: int = 7) -> list[str]:
    """``docs`` documents of 30–60 words over ``sources`` exact_deduplicated partitions (row groups of
    5,000), every tenth a copy of an earlier one with one word changed; an inbox folder per source."""
    rng = np.random.default_rng(seed)
    storage = Storage(home.storage)
    per = docs // sources
    names_ = [f"src{i}" for i in range(sources)]
    for source in names_:
        lengths = rng.integers(30, 60, per)
        words = WORDS[rng.integers(0, len(WORDS), int(lengths.sum()))]
        cuts = np.cumsum(lengths)[:-1]
        texts = [" ".join(w) for w in np.split(words, cuts)]
        for i in range(10, per, 10):
            copy = texts[rng.integers(0, i)].split(" ")
            copy[len(copy) // 2] = "changed"
            texts[i] = " ".join(copy)
        table = pa.table({"id": [f"{source}-{i}" for i in range(per)], "text": pa.array(texts, pa.string())})
        path = storage.path(names.EXACT_DEDUPLICATED, source)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=5_000)
        inbox = home.inbox_source("text", source)
        inbox.mkdir(parents=True, exist_ok=True)
        (inbox / "doc.jsonl").write_text('{"id": "x", "text": "placeholder"}\n')
    return names_


class TreePeak:
    """The peak, over samples, of the summed RSS of a process and all its descendants."""

    def __init__(self, pid: int, every_s: float = 0.05):
        self.root = psutil.Process(pid)
        self.every_s = every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(self.every_s)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def materialize_measured(
    home: Layout,
    engine: dict,
    code: Path = ROOT,
    timeout_s: int = 900,
    select: str = names.CORPUS_FUZZY_DEDUP,
    partition: str | None = None,
) -> tuple[int, int, str]:
    """(return code, peak RSS bytes of the Dagster process tree, output) of ``select`` (by default
    corpus_fuzzy_dedup, with no incremental replay) materialized by the Dagster CLI of checkout
    ``code`` with ``engine``."""
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_DISABLE_USAGE_STATS": "1",
        "PYTHONPATH": str(code),
        "REFINERY_HOME": str(home.home),
        "DAGSTER_HOME": str(home.dagster_home),
    }
    home.dagster_home.mkdir(parents=True, exist_ok=True)
    (home.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    subprocess.run(
        [BIN / "refinery", "--home", str(home.home), "partitions"],
        env=env,
        cwd=code,
        check=True,
        capture_output=True,
    )
    config: dict = {"resources": {"engine": {"config": engine}}}
    if select == names.CORPUS_FUZZY_DEDUP:
        config["ops"] = {names.CORPUS_FUZZY_DEDUP: {"config": {"replay_incremental": False}}}
    command = [BIN / "dagster", "asset", "materialize", "-m", "definitions", "--select", select]
    command += ["--partition", partition] if partition else []
    proc = subprocess.Popen(
        [*command, "--config-json", json.dumps(config)],
        env=env, cwd=code, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    meter = TreePeak(proc.pid)
    out, _ = proc.communicate(timeout=timeout_s)
    return proc.returncode, meter.stop(), out
