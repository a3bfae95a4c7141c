"""The inbox sensors: new source folders become partitions, changed ones get their raw asset re-run.

Everything after the raw asset refreshes by itself (assets/automation.py): each stage is eager on
its upstream partition, so a new or changed source flows through every stage of its kind, the
model-based ones included as soon as the models exist.
"""

from __future__ import annotations

import json
import os

import dagster as dg

from assets.partitions import partitions_of
from refinery.inbox import scan
from refinery.kinds import KINDS
from resources import RefineryHome

SETTLE_SECONDS = 5.0
INTERVAL_ENV = "REFINERY_SENSOR_INTERVAL"  # seconds between inbox checks (default 30)


def evaluate_inbox(
    context: dg.SensorEvaluationContext, refinery: RefineryHome, kind: str
) -> dg.SensorResult | dg.SkipReason:
    """Diff the inbox's fingerprints against the cursor: add partitions for new sources, request
    the raw asset of every new or changed one (keyed by its fingerprint, so a state runs once)."""
    partitions = partitions_of(kind)
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
    raw = dg.AssetKey(KINDS[kind].raw)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=name,
                asset_selection=[raw],
                run_key=f"{kind}:{name}:{inbox.ready[name].fingerprint}",
                tags={"refinery/source": name, "refinery/fingerprint": inbox.ready[name].fingerprint},
            )
            for name in changed
        ],
        dynamic_partitions_requests=[partitions.build_add_request(new_sources)] if new_sources else [],
        cursor=json.dumps(next_cursor, sort_keys=True),
    )


def inbox_sensor(kind: str) -> dg.SensorDefinition:
    """The sensor of one inbox kind."""
    raw = KINDS[kind].raw

    @dg.sensor(
        name=f"{kind}_inbox_sensor",
        asset_selection=[raw],
        minimum_interval_seconds=int(os.environ.get(INTERVAL_ENV) or 30),
        description=f"Watches $REFINERY_HOME/inbox/{kind}/: adds one {partitions_of(kind).name} "
        f"partition per new folder and materializes {raw} for every source whose files changed; the later "
        "stages follow by their automation conditions (turn on default_automation_condition_sensor).",
    )
    def _sensor(context: dg.SensorEvaluationContext, refinery: RefineryHome):
        return evaluate_inbox(context, refinery, kind)

    return _sensor


text_inbox_sensor, sft_inbox_sensor, image_text_inbox_sensor, video_inbox_sensor = (
    inbox_sensor(kind) for kind in ("text", "sft", "image_text", "video")
)
