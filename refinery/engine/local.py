"""The local engine: the partition streams through one processor in this process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from refinery.engine.slices import ColumnFn, Summarize, plan_slices, write_column_part
from refinery.kernel.execute import entered, run_partition
from refinery.kernel.processor import Processor
from refinery.kernel.runner import StageRun
from refinery.kernel.spec import ProcessorMaker, StageContext, TaskRunner
from refinery.storage import DEFAULT_BATCH_ROWS


class LocalEngine:
    """Runs every stage in-process, batch after batch (the default; needs nothing installed).
    Keeps the :class:`refinery.kernel.spec.Engine` contract."""

    name = "local"
    distributed = False
    slice_rows = 20_000  # rows per part of map_to_parts (as the Ray engine's default)

    def run(self, ctx: StageContext, make: ProcessorMaker, gpus: float = 0) -> tuple[StageRun, Processor]:
        with entered(make(ctx)) as process:
            run = run_partition(ctx, process)
        return run, process

    def map_to_parts(
        self,
        location: Path | str,
        make_fn: Callable[[], ColumnFn],
        columns: list[str],
        folder: Path | str,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        gpus: float = 0,
        summarize: Summarize | None = None,
    ) -> list[dict]:
        """The Ray engine's :meth:`~refinery.engine.ray_engine.RayEngine.map_to_parts` in this
        process: the same slices, parts, markers and per-part dicts, one slice after the other."""
        fn = None
        out = []
        for piece in plan_slices(location, self.slice_rows):
            if fn is None:
                fn = make_fn()
            out.append(write_column_part(piece, fn, columns, folder, batch_rows, summarize))
        return out

    def parallelism(self) -> int:
        return 1

    def check_reachable(self) -> None:
        return None

    def tasks(self) -> tuple[TaskRunner, int]:
        """(a runner of independent tasks in this process, one worker): the shuffle steps of
        :mod:`refinery.dedup.corpus_shuffle` run through it, one task after the other."""
        from refinery.engine.tasks import InProcessTasks

        return InProcessTasks(), 1

    def describe(self) -> dict:
        return {"engine": self.name}
