"""The local engine: the partition streams through one processor in this process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from refinery.stages.execute import entered, run_partition
from refinery.stages.runner import StageRun
from refinery.stages.spec import ProcessorMaker, StageContext
from refinery.storage import DEFAULT_BATCH_ROWS, iter_path_batches

if TYPE_CHECKING:
    from refinery.dedup.corpus_dedup import PairStats


class LocalEngine:
    """Runs every stage in-process, batch after batch (the default; needs nothing installed)."""

    name = "local"

    def run(self, ctx: StageContext, make: ProcessorMaker, gpus: float = 0) -> tuple[StageRun, Any]:
        with entered(make(ctx)) as process:
            run = run_partition(ctx, process)
        return run, process

    def map_slices(
        self,
        location: Path,
        make_fn: Callable[[], Callable[[pd.DataFrame], np.ndarray]],
        columns: list[str],
        batch_rows: int = DEFAULT_BATCH_ROWS,
        gpus: float = 0,
    ) -> np.ndarray:
        """``fn(batch)`` for every batch of a partition, rows in order, stacked (``make_fn`` runs
        once: it loads what ``fn`` needs, e.g. a model)."""
        fn = make_fn()
        parts = [fn(batch.to_pandas()) for batch in iter_path_batches(location, batch_rows, columns)]
        return np.concatenate(parts) if parts else fn(pd.DataFrame({c: [] for c in columns}))

    def group_pairs(
        self, signatures: np.ndarray, bands: int, rows: int, max_bucket_all_pairs: int = 64, anchors: int = 4
    ) -> tuple[pd.DataFrame, PairStats]:
        """Step 2 of corpus-wide fuzzy dedup: the band rows grouped by ``(band, bucket)`` into unique
        candidate pairs, one band at a time in this process (:func:`pairs_by_band`)."""
        from refinery.dedup.corpus_dedup import pairs_by_band

        return pairs_by_band(signatures, bands, rows, max_bucket_all_pairs, anchors)

    def tasks(self) -> tuple[Any, int]:
        """(a runner of independent tasks in this process, one worker): the shuffle steps of
        :mod:`refinery.dedup.corpus_shuffle` run through it, one task after the other."""
        from refinery.engine.tasks import InProcessTasks

        return InProcessTasks(), 1

    def describe(self) -> dict:
        return {"engine": self.name}
