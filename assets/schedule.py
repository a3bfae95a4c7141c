"""dataset_splits and training_schedule: leak-free splits, and the ordered manifest training reads."""

import dagster as dg

from assets.automation import EVERY_INTERVAL, STAGE
from assets.factory import config_class, publish
from refinery import names
from refinery.kernel.report import provenance
from refinery.schedule.order import ScheduleParams
from refinery.schedule.publish import SplitsParams, publish_schedule, publish_splits
from resources import RefineryHome

SplitConfig = config_class(SplitsParams, names.DATASET_SPLITS)
ScheduleConfig = config_class(ScheduleParams, names.TRAINING_SCHEDULE)


@dg.asset(
    name=names.DATASET_SPLITS,
    automation_condition=EVERY_INTERVAL,
    deps=[names.PRETRAIN_CORPUS],
    group_name="schedule",
    kinds={"python", "parquet"},
    check_specs=[
        dg.AssetCheckSpec(
            "no_leakage",
            asset=names.DATASET_SPLITS,
            blocking=True,
            description="No known duplicate relation crosses splits, and no sampled held-out document has a "
            "near copy (brute force over MinHash signatures) in train.",
        )
    ],
    description="Deterministic train/validation/test splits (80/10/10 by default) by a salted hash of each "
    "document's group: union-find over the dedup stages' duplicate_of decisions, identical content hashes, "
    "and a lower-threshold MinHash-LSH pass over the corpus, so every near-duplicate cluster stays in one "
    "split. Sizes and the leakage check in metadata.",
)
def dataset_splits(context: dg.AssetExecutionContext, config: SplitConfig, refinery: RefineryHome):
    stamp = provenance(names.DATASET_SPLITS, "all", config)
    return publish(context, publish_splits(refinery.storage(), config, stamp))


@dg.asset(
    name=names.TRAINING_SCHEDULE,
    automation_condition=STAGE,
    deps=[names.PRETRAIN_MIXTURE, names.DATASET_SPLITS],
    group_name="schedule",
    kinds={"python", "parquet", "duckdb"},
    check_specs=[
        dg.AssetCheckSpec(
            "shards_match_manifest",
            asset=names.TRAINING_SCHEDULE,
            blocking=True,
            description="Every split's shards hold exactly the manifest's documents, "
            "positions 0…n−1 in order.",
        )
    ],
    description="The ordered manifest of what training reads "
    "(storage/training_schedule/training_schedule.parquet: "
    "split, position, step, phase, shard, domain, source, id, epoch, replay, tokens, difficulty) and its "
    "documents in order as Parquet shards (storage/training_schedule/shards/<split>/) for "
    "refinery.schedule.loader.ScheduleDataset. Train follows pretrain_mixture, ordered by the strategy: "
    "multi-task mixing by weight, sequential with replay, or a curriculum easy → hard "
    "(KenLM perplexity where "
    "present, else length) with linear/root/step pacing; validation and test hold each split document once.",
)
def training_schedule(context: dg.AssetExecutionContext, config: ScheduleConfig, refinery: RefineryHome):
    stamp = provenance(names.TRAINING_SCHEDULE, "all", config)
    return publish(context, publish_schedule(refinery.storage(), config, stamp))
