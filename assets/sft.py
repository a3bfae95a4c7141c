"""raw_sft → sft_checked → sft_selected: fine-tuning records from the SFT inbox, per source."""

from collections.abc import Iterator
from contextlib import contextmanager

from assets.factory import ingest_asset, stage_asset
from refinery.batch import BatchProcessor
from refinery.engine.resume import data_version, fingerprint, remove_scratch, scratch_folder
from refinery.kernel.report import withdrawn_claims
from refinery.kernel.spec import StageContext
from refinery.metadata import Json
from refinery.names import DEDUP_POOL
from refinery.sft.check import SftChecker
from refinery.sft.check_plan import DecidedDedup, claim_in_order, rule_parts
from refinery.sft.check_plan import new_plan_folder as new_check_folder
from refinery.sft.dedup import SftPromptDeduper, open_group_indexes
from refinery.sft.reader import SftReader
from refinery.sft.rules import SftRules
from refinery.sft.selection_plan import upstream_fingerprint
from refinery.sft.selector import PLAN_STAMP, SftSelector, selection_pool
from refinery.stages import sft
from refinery.table_store import refuse_object_root

CHECK_STAMP = "check_plan"  # provenance key: the dedup outcomes' folder, relative to the storage root


def make_checks(run: StageContext):
    """In this process: rules and claims batch by batch. On a distributed engine: the plan
    (rules on the workers, claims here), then each worker's copy checks its slices against it."""
    stamp = run.provenance.get(CHECK_STAMP)
    if stamp:  # a worker writing its slices
        return SftChecker(SftRules(run.params), DecidedDedup(run.storage.root / stamp))
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


def _checks_planned(run: StageContext) -> BatchProcessor:
    upstream, storage = run.spec.upstream, run.storage
    why = "its rule parts and claim outcomes are folders under the root that the workers share"
    refuse_object_root(storage, "sft_checked on a distributed engine", why)
    columns = storage.schema(upstream, run.source).names
    location = storage.require(upstream, run.source)
    key = fingerprint(data_version(location), run.params.model_dump_json(), run.engine.describe())
    scratch = scratch_folder(storage, run.spec.name, run.source, "rules", key)
    rules = rule_parts(run.engine, location, columns, run.params, scratch)
    folder = new_check_folder(
        storage.root, run.source, upstream_fingerprint(location, run.params.model_dump_json())
    )
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
    run.provenance[CHECK_STAMP] = str(folder.relative_to(storage.root))
    return SftChecker(SftRules(run.params), DecidedDedup(folder))


def make_selection(run: StageContext) -> BatchProcessor:
    stamp = run.provenance.get(PLAN_STAMP)
    if stamp:  # a worker writing its slices: the step has made the plan
        return SftSelector.decided(run.storage.root / stamp, run.params)
    loader = run.resources.embedder
    if run.engine.distributed:
        why = "the workers that write the rows read its plan from a folder under the root"
        refuse_object_root(run.storage, "sft_selected on a distributed engine", why)
    selector = SftSelector.planned(
        run.storage,
        run.spec.upstream,
        run.source,
        run.params,
        log=run.log,
        loader=loader,
        engine=run.engine,
        pool=selection_pool(run.engine, loader.compute) if run.engine.distributed else None,
    )
    if run.engine.distributed:  # the workers that write the rows find the plan through it
        run.provenance[PLAN_STAMP] = str(selector.folder.relative_to(run.storage.root))
    return selector


raw_sft = ingest_asset(sft.RAW_SFT, SftReader)
sft_checked = stage_asset(sft.SFT_CHECKED, make_checks, resources=["dedup_index"], pool=DEDUP_POOL)
sft_selected = stage_asset(sft.SFT_SELECTED, make_selection, resources=["embedder"], gpu=True)
