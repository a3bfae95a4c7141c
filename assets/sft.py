"""raw_sft → sft_checked → sft_selected: fine-tuning records from the SFT inbox, per source."""

from collections.abc import Iterator
from contextlib import contextmanager

from assets.factory import ingest_asset, stage_asset
from refinery.batch import BatchProcessor
from refinery.kernel.report import withdrawn_claims
from refinery.kernel.spec import StageContext
from refinery.metadata import Json
from refinery.names import DEDUP_POOL
from refinery.sft.check import SftChecker
from refinery.sft.dedup import SftPromptDeduper, open_group_indexes
from refinery.sft.reader import SftReader
from refinery.sft.rules import SftRules
from refinery.sft.selector import SftSelector
from refinery.stages import sft


@contextmanager
def _checks(run: StageContext) -> Iterator[BatchProcessor]:
    dedup_index = run.resources.dedup_index
    indexes = open_group_indexes(
        dedup_index.backend, run.layout, dedup_index.redis_url, dedup_index.namespace, run.params
    )
    with SftPromptDeduper.claiming(indexes, run.source, run.params) as deduper:
        yield SftChecker(SftRules(run.params), deduper)
    run.metadata.update(
        index_backend=dedup_index.backend,
        index_sizes=Json(deduper.sizes),
        previous_entries_replaced=deduper.replaced,
        **withdrawn_claims(deduper.withdrawn),
    )
    run.summary["claims_withdrawn"] = deduper.withdrawn


def _selection(run: StageContext) -> BatchProcessor:
    embedder = run.resources.embedder.load()
    return SftSelector(run.storage, run.spec.upstream, run.source, run.params, embedder, run.log)


raw_sft = ingest_asset(sft.RAW_SFT, SftReader)
sft_checked = stage_asset(sft.SFT_CHECKED, _checks, resources=["dedup_index"], pool=DEDUP_POOL)
sft_selected = stage_asset(sft.SFT_SELECTED, _selection, resources=["embedder"], gpu=True)
