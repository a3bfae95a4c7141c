"""raw_sft → sft_checked → sft_selected: fine-tuning records from the SFT inbox, per source."""

from collections.abc import Iterator
from contextlib import contextmanager

from assets.factory import ingest_asset, stage_asset
from refinery.batch import BatchProcessor
from refinery.engine.resume import data_version, fingerprint, remove_scratch, scratch_folder, under_root
from refinery.engine.root_folder import RootFolder
from refinery.engine.slices import slice_location
from refinery.kernel.report import withdrawn_claims
from refinery.kernel.spec import StageContext
from refinery.metadata import Json
from refinery.names import DEDUP_POOL
from refinery.sft.check import SftChecker
from refinery.sft.check_plan import PLAN_DIR as CHECK_DIR
from refinery.sft.check_plan import DecidedDedup, claim_in_order, rule_parts
from refinery.sft.check_plan import new_plan_folder as new_check_folder
from refinery.sft.dedup import SftPromptDeduper, open_group_indexes
from refinery.sft.plan_folder import plan_relative
from refinery.sft.reader import SftReader
from refinery.sft.rules import SftRules
from refinery.sft.selection_plan import run_name, upstream_fingerprint
from refinery.sft.selector import PLAN_STAMP, SftSelector, selection_pool
from refinery.stages import sft
from refinery.table_store import partition_identity

CHECK_STAMP = "check_plan"  # provenance key: the dedup outcomes' folder, relative to the storage root


def make_checks(run: StageContext):
    """In this process: rules and claims batch by batch. On a distributed engine: the plan
    (rules on the workers, claims here), then each worker's copy checks its slices against it. The
    plan's folders are under the storage root (a local folder or an object store's URI), which the
    workers open from its name."""
    stamp = run.provenance.get(CHECK_STAMP)
    if stamp:  # a worker writing its slices
        return SftChecker(SftRules(run.params), DecidedDedup(under_root(run.storage, stamp)))
    if run.engine.distributed:
        return _checks_planned(run)
    return _checks_here(run)


def _indexes(run: StageContext):
    dedup_index = run.resources.dedup_index
    return open_group_indexes(
        dedup_index.backend, run.layout, dedup_index.redis_url, dedup_index.namespace, run.params
    )


def _report_claims(run: StageContext, deduper: SftPromptDeduper) -> None:
    run.metadata.update(
        index_backend=run.resources.dedup_index.backend,
        index_sizes=Json(deduper.sizes),
        previous_entries_replaced=deduper.replaced,
        **withdrawn_claims(deduper.withdrawn),
    )
    run.summary["claims_withdrawn"] = deduper.withdrawn


@contextmanager
def _checks_here(run: StageContext) -> Iterator[BatchProcessor]:
    with SftPromptDeduper.claiming(_indexes(run), run.source, run.params) as deduper:
        yield SftChecker(SftRules(run.params), deduper)
    _report_claims(run, deduper)


@contextmanager
def _checks_planned(run: StageContext) -> Iterator[BatchProcessor]:
    upstream, storage = run.spec.upstream, run.storage
    columns = storage.schema(upstream, run.source).names
    location = slice_location(storage, upstream, run.source)  # a URI on an object store
    key = fingerprint(data_version(location), run.params.model_dump_json(), run.engine.describe())
    scratch = scratch_folder(storage, run.spec.name, run.source, "rules", key)
    rules = rule_parts(run.engine, location, columns, run.params, scratch)
    identity = partition_identity(storage, upstream, run.source)
    plan_key = upstream_fingerprint(identity, run.params.model_dump_json())
    folder = new_check_folder(storage.root, run.source, plan_key)
    with SftPromptDeduper.claiming(_indexes(run), run.source, run.params) as deduper:
        claimed = claim_in_order(storage, upstream, run.source, rules, deduper, folder)
    remove_scratch(scratch)  # claimed and committed: the flags and signatures are spent
    _report_claims(run, deduper)
    run.metadata.update(
        rules_checked_by=run.engine.name,
        signatures_computed_by=run.engine.name,
        records_claimed_in_step=claimed,
        rule_rows_held_at_once=rules.reader.peak_rows_held,
    )
    run.provenance[CHECK_STAMP] = plan_relative(CHECK_DIR, run.source, run_name(run.source, plan_key))
    yield SftChecker(SftRules(run.params), DecidedDedup(folder))
    RootFolder.of(folder).remove()  # written and committed: the outcomes are spent (a failure keeps them)


def make_selection(run: StageContext):
    """In this process: the plan, then the rows. On a distributed engine the plan's folder is under
    the storage root (a local folder, or a URI on an object store) and named in the provenance for
    the workers that write the rows; it goes once they are committed."""
    stamp = run.provenance.get(PLAN_STAMP)
    if stamp:  # a worker writing its slices: the step has made the plan
        return SftSelector.decided(under_root(run.storage, stamp), run.params)
    if run.engine.distributed:
        return _selection_planned(run)
    return _selector(run)


def _selector(run: StageContext) -> SftSelector:
    loader = run.resources.embedder
    return SftSelector.planned(
        run.storage,
        run.spec.upstream,
        run.source,
        run.params,
        log=run.log,
        loader=loader,
        engine=run.engine,
        pool=selection_pool(run.engine, loader.compute) if run.engine.distributed else None,
    )


@contextmanager
def _selection_planned(run: StageContext) -> Iterator[BatchProcessor]:
    selector = _selector(run)
    run.provenance[PLAN_STAMP] = selector.stamp  # the workers that write the rows find the plan through it
    yield selector
    RootFolder.of(selector.folder).remove()  # written and committed: the decisions are spent


raw_sft = ingest_asset(sft.RAW_SFT, SftReader)
sft_checked = stage_asset(sft.SFT_CHECKED, make_checks, resources=["dedup_index"], pool=DEDUP_POOL)
sft_selected = stage_asset(sft.SFT_SELECTED, make_selection, resources=["embedder"], gpu=True)
