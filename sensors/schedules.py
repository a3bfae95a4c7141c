"""Schedules: the corpus report is refreshed every day."""

import dagster as dg

from assets.jobs import corpus_report_job

corpus_report_schedule = dg.ScheduleDefinition(
    name="corpus_report_schedule",
    job=corpus_report_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    description="Daily refresh of corpus_report at 06:00 UTC.",
)
