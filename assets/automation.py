"""When assets refresh by themselves (declarative automation; turn on the automation sensor).

- The inbox sensors add a partition for each new source folder and request its ``raw_*`` asset
  when its files change; every later stage of that kind is :data:`STAGE` (``eager``): it runs when
  its upstream partition updates, once nothing it needs is missing or running. The model-based text
  stages need the models, so a source that arrives before them waits and flows on as soon as they
  exist.
- The text models are :data:`MODEL`: trained when missing, retrained on ``$REFINERY_MODELS_CRON``
  (default Sundays 03:00 UTC) or when the reference corpus changes (``reference_corpus`` is an
  observed source asset whose version is a fingerprint of its files). A retrained model updates the
  stages it scored, which then re-score every partition (eager), and so on down.
- The cross-source tables (training data, the corpus report) are :data:`EVERY_INTERVAL`: they
  refresh when any source's corpus has changed, at most once per ``$REFINERY_REFRESH_CRON`` tick
  (default hourly), and not before some source has a corpus; their own downstream follows them
  eagerly.

The conditions are labelled, so the UI's Automation tab shows them by name.
"""

from __future__ import annotations

import os

import dagster as dg

MODELS_CRON_ENV = "REFINERY_MODELS_CRON"
REFRESH_CRON_ENV = "REFINERY_REFRESH_CRON"
OBSERVE_CRON_ENV = "REFINERY_OBSERVE_CRON"
MODELS_CRON = os.environ.get(MODELS_CRON_ENV) or "0 3 * * 0"
REFRESH_CRON = os.environ.get(REFRESH_CRON_ENV) or "0 * * * *"
OBSERVE_CRON = os.environ.get(OBSERVE_CRON_ENV) or "* * * * *"
REFERENCE = dg.AssetSelection.assets("reference_corpus")

REFERENCE_CHANGED = dg.AutomationCondition.data_version_changed()
_IDLE = ~dg.AutomationCondition.in_progress() & ~dg.AutomationCondition.any_deps_in_progress()

# Reset only when the target is requested or updated. Dagster's eager() also resets on the sensor's
# first evaluation, so data that arrived before the sensor was turned on (the inbox sensor's first
# runs race it) would never flow on; here a partition that is missing when the sensor starts, or whose
# upstream updated, is requested once its upstream is there.
_HANDLED = dg.AutomationCondition.newly_requested() | dg.AutomationCondition.newly_updated()

# A dep partition updated by a run that did not also hold this asset (a sensor's raw_* run, a model's
# run). Why not Dagster's any_deps_updated() alone: its "executed with the root target" test looks
# only at the dep's latest materialization of ANY partition (dagster's
# AssetGraphView._compute_latest_asset_run_matches), so while two partitions' chains run side by
# side, a dep update of partition A looks foreign whenever B's came after it. An evaluation reads the
# materializations up to an event id fixed at its start but the runs' status as it is, so it can find
# A's run over (A's stage no longer in progress) without seeing A's own materialization of the stage,
# and A's stage ran twice (tests/dagster/test_automation_daemon.py, twice in one session). So such an
# update requests the stage only once it has held for one more evaluation and the stage's own run did
# not end in this one: by then the stage's materialization from that run is seen and resets it.
# Cost: a refresh from outside starts one evaluation later.
_DEP_UPDATED = dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.newly_updated() & ~dg.AutomationCondition.executed_with_root_target()
).since(_HANDLED)
_RUN_JUST_ENDED = (~dg.AutomationCondition.in_progress()).newly_true()
_DEP_UPDATED_CONFIRMED = (_DEP_UPDATED & ~_DEP_UPDATED.newly_true() & ~_RUN_JUST_ENDED).with_label(
    "a dep updated outside this asset's run, still unhandled one evaluation later"
)
# A dep requested in this same evaluation: the stage joins the dep's run (one run per partition).
_DEP_REQUESTED = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())

STAGE = (
    (
        (dg.AutomationCondition.missing().newly_true() | _DEP_REQUESTED).since(_HANDLED)
        | _DEP_UPDATED_CONFIRMED
    )
    & ~dg.AutomationCondition.any_deps_missing()
    & _IDLE
).with_label("eager, from the first evaluation")

MODEL = (
    (
        dg.AutomationCondition.missing().newly_true()
        | dg.AutomationCondition.cron_tick_passed(MODELS_CRON)
        | dg.AutomationCondition.any_deps_match(REFERENCE_CHANGED).allow(REFERENCE)
    ).since(_HANDLED)
    & ~dg.AutomationCondition.any_deps_missing()
    & _IDLE
).with_label(f"missing, on_cron({MODELS_CRON}) or reference corpus changed")

EVERY_INTERVAL = (
    (
        dg.AutomationCondition.missing().newly_true()
        | (
            dg.AutomationCondition.any_deps_updated().since(_HANDLED)
            & dg.AutomationCondition.cron_tick_passed(REFRESH_CRON).since(_HANDLED)
        )
    ).since(_HANDLED)
    & ~dg.AutomationCondition.any_deps_missing()
    # Some source has a corpus: before the first one, "no dep partition is missing" holds vacuously
    # and the tables would be launched over nothing (a failed run when the daemon first starts).
    & dg.AutomationCondition.any_deps_match(~dg.AutomationCondition.missing())
    & _IDLE
).with_label(f"missing, or deps updated (at most once per {REFRESH_CRON}), once a source has a corpus")

# Sources outside Refinery (the reference corpus) are observed on this cadence.
OBSERVE = dg.AutomationCondition.cron_tick_passed(OBSERVE_CRON).with_label(f"observe {OBSERVE_CRON}")
