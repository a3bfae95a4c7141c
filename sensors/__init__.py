"""Sensors, schedules and the jobs they launch."""

from sensors.inbox import image_text_inbox_sensor, sft_inbox_sensor, text_inbox_sensor, video_inbox_sensor
from sensors.jobs import (
    corpus_report_job,
    image_text_pipeline_job,
    sft_pipeline_job,
    text_models_job,
    text_pipeline_job,
    text_prefilter_job,
    text_quality_job,
    training_data_job,
    video_pipeline_job,
)
from sensors.schedules import corpus_report_schedule

ALL_JOBS = [
    text_pipeline_job,
    text_prefilter_job,
    text_models_job,
    text_quality_job,
    corpus_report_job,
    sft_pipeline_job,
    training_data_job,
    image_text_pipeline_job,
    video_pipeline_job,
]
ALL_SENSORS = [text_inbox_sensor, sft_inbox_sensor, image_text_inbox_sensor, video_inbox_sensor]
ALL_SCHEDULES = [corpus_report_schedule]

__all__ = ["ALL_JOBS", "ALL_SCHEDULES", "ALL_SENSORS"]
