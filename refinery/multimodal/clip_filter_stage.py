"""clip_filtered's processor for one step (the asset only wires it): threshold mode decides each row
alone; top-fraction mode first ranks the partition on the engine's workers
(:mod:`refinery.multimodal.clip_rank`) and stamps the plan in the provenance, so the workers' copies
of the processor read their slices' ranks instead of ranking again."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from refinery.batch import BatchProcessor
from refinery.engine.resume import remove_scratch
from refinery.engine.slices import slice_location
from refinery.kernel.spec import StageContext
from refinery.multimodal.clip_rank import PLAN_KEY, RankPlan, SliceRanks, plan_ranks
from refinery.multimodal.clip_score import FilterProcess, ranked_plan, resolve_threshold, threshold_plan


def clip_filter_processor(run: StageContext) -> BatchProcessor | AbstractContextManager[BatchProcessor]:
    """Threshold mode decides each row alone (on the workers as it is). Top-fraction mode ranks the
    partition first (the driver's copy: refinery/multimodal/clip_rank.py, on the workers); the
    workers' copies read the plan from the provenance it stamps and their slices' ranks."""
    scored = run.storage.provenance(run.spec.upstream, run.source)
    params = run.params
    if params.mode == "threshold":
        plan = threshold_plan(resolve_threshold(params, scored.get("clip_threshold")))
        return _logged(run, FilterProcess.for_plan(plan, scored, params))
    if PLAN_KEY in run.provenance:  # a worker's copy: the driver ranked the partition
        ranked = RankPlan.from_stamp(run.provenance[PLAN_KEY])
        ranks = SliceRanks(ranked, ranked.reduce_step(run.storage))
        return FilterProcess.for_plan(ranked_plan(ranked, ranks), scored, params)
    return _ranked_filter(run, scored)


@contextmanager
def _ranked_filter(run: StageContext, scored: dict) -> Iterator[BatchProcessor]:
    location = slice_location(run.storage, run.spec.upstream, run.source)
    ranking = plan_ranks(
        run.engine,
        run.storage,
        run.spec.name,
        run.source,
        location,
        run.params.top_fraction,
        run.spec.batch_rows,
    )
    ranking.info["where"] = run.engine.name
    run.provenance[PLAN_KEY] = ranking.plan.stamp()
    ranks = SliceRanks(ranking.plan, ranking.plan.reduce_step(run.storage), ranking.slice_rows)
    yield _logged(
        run, FilterProcess.for_plan(ranked_plan(ranking.plan, ranks, ranking.info), scored, run.params)
    )
    remove_scratch(ranking.folder)  # the output is committed: the ranks go (kept for a retry on failure)


def _logged(run: StageContext, process: FilterProcess) -> FilterProcess:
    if process.warning:
        run.log.warning(process.warning)
    return process
