"""Sensors and schedules: what starts runs by itself."""

from sensors.automation import automation_sensor
from sensors.inbox import image_text_inbox_sensor, sft_inbox_sensor, text_inbox_sensor, video_inbox_sensor
from sensors.schedules import corpus_report_schedule

ALL_SENSORS = [
    text_inbox_sensor,
    sft_inbox_sensor,
    image_text_inbox_sensor,
    video_inbox_sensor,
    automation_sensor,
]
ALL_SCHEDULES = [corpus_report_schedule]

__all__ = ["ALL_SCHEDULES", "ALL_SENSORS"]
