"""Sensors, schedules and the jobs they launch."""

from sensors.inbox import text_inbox_sensor
from sensors.jobs import corpus_report_job, text_pipeline_job
from sensors.schedules import corpus_report_schedule

ALL_JOBS = [text_pipeline_job, corpus_report_job]
ALL_SENSORS = [text_inbox_sensor]
ALL_SCHEDULES = [corpus_report_schedule]

__all__ = ["ALL_JOBS", "ALL_SCHEDULES", "ALL_SENSORS"]
