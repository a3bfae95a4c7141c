"""Sensors: what starts runs by itself (the inbox sensors and the automation sensor)."""

from sensors.automation import automation_sensor
from sensors.inbox import image_text_inbox_sensor, sft_inbox_sensor, text_inbox_sensor, video_inbox_sensor

ALL_SENSORS = [
    text_inbox_sensor,
    sft_inbox_sensor,
    image_text_inbox_sensor,
    video_inbox_sensor,
    automation_sensor,
]

__all__ = ["ALL_SENSORS"]
