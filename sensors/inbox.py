"""The inbox sensor: new source folders become partitions, changed ones get a run."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import dagster as dg

from assets import image_text_source, sft_source, text_source, video_source
from assets.jobs import (
    image_text_pipeline_job,
    sft_pipeline_job,
    text_pipeline_job,
    text_prefilter_job,
    video_pipeline_job,
)
from refinery.inbox import scan
from refinery.quality.artifacts import missing_models
from resources import RefineryHome

SETTLE_SECONDS = 5.0

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


def evaluate_inbox(
    context: dg.SensorEvaluationContext,
    refinery: RefineryHome,
    kind: str,
    partitions: dg.DynamicPartitionsDefinition,
    job_name: str | None = None,
) -> dg.SensorResult | dg.SkipReason:
    """Shared by every inbox kind: diff fingerprints against the cursor, add partitions, request runs.

    ``job_name`` picks one of the sensor's jobs for the runs (default: its only job).
    """
    cursor: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    inbox = scan(refinery.layout(), kind, SETTLE_SECONDS)
    for name in inbox.invalid:
        context.log.warning(
            f"ignoring inbox/{kind}/{name}: not a valid source name "
            "(letters, digits, '.', '_', '-'; starting with a letter or digit)"
        )
    known = set(context.instance.get_dynamic_partitions(partitions.name))
    new_sources = sorted(set(inbox.ready) - known)
    changed = sorted(name for name, state in inbox.ready.items() if cursor.get(name) != state.fingerprint)
    next_cursor = {**cursor, **{name: state.fingerprint for name, state in inbox.ready.items()}}
    if not new_sources and not changed:
        waiting = f" ({len(inbox.settling)} still being written: {inbox.settling})" if inbox.settling else ""
        return dg.SkipReason(f"no new or changed sources in inbox/{kind}{waiting}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=name,
                job_name=job_name,
                run_key=f"{kind}:{name}:{inbox.ready[name].fingerprint}",
                tags={"refinery/source": name, "refinery/fingerprint": inbox.ready[name].fingerprint},
            )
            for name in changed
        ],
        dynamic_partitions_requests=[partitions.build_add_request(new_sources)] if new_sources else [],
        cursor=json.dumps(next_cursor, sort_keys=True),
    )


@dg.sensor(
    jobs=[text_pipeline_job, text_prefilter_job],
    minimum_interval_seconds=30,
    description="Watches $REFINERY_HOME/inbox/text/: adds a text_source partition for each new folder and "
    "runs the text pipeline for every source whose files changed. Until reference_lm and "
    "quality_classifier exist it runs text_prefilter (the rule-based stages) instead.",
)
def text_inbox_sensor(context: dg.SensorEvaluationContext, refinery: RefineryHome):
    missing = missing_models(refinery.layout().home)
    if missing:
        context.log.info(f"models {missing} not materialized yet: running the rule-based stages only")
    job = text_prefilter_job if missing else text_pipeline_job
    return evaluate_inbox(context, refinery, "text", text_source, job.name)


def _pipeline_sensor(
    kind: str, partitions: dg.DynamicPartitionsDefinition, job: UnresolvedAssetJobDefinition, what: str
) -> dg.SensorDefinition:
    """The sensor of an inbox kind whose sources always go through one job."""

    @dg.sensor(
        name=f"{kind}_inbox_sensor",
        job=job,
        minimum_interval_seconds=30,
        description=f"Watches $REFINERY_HOME/inbox/{kind}/: adds one {partitions.name} partition per new "
        f"folder and runs {what} for every source whose files changed.",
    )
    def _sensor(context: dg.SensorEvaluationContext, refinery: RefineryHome):
        return evaluate_inbox(context, refinery, kind, partitions)

    return _sensor


sft_inbox_sensor = _pipeline_sensor("sft", sft_source, sft_pipeline_job, "the SFT pipeline")
image_text_inbox_sensor = _pipeline_sensor(
    "image_text", image_text_source, image_text_pipeline_job, "the image–text pipeline"
)
video_inbox_sensor = _pipeline_sensor("video", video_source, video_pipeline_job, "the keyframe pipeline")
