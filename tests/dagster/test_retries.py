"""Transient failures are retried with backoff: the dedup index's Redis refuses connections at
first (it is not running yet), the step retries, and the run succeeds once Redis is up."""

import subprocess
import threading
import time

import dagster as dg
import redis

from assets import TEXT_PREFILTER
from refinery.dedup.keys import redis_prefix
from resources import DedupIndexResource
from tests.conftest import _free_port, start_redis_server
from tests.dagster.conftest import build_inbox, resources_for


def test_a_refused_redis_connection_is_retried_until_redis_is_up(home, instance, tmp_path):
    build_inbox(home)
    port = _free_port()
    started: list[subprocess.Popen] = []

    def start_redis_later() -> None:
        """Start Redis once the step has failed and is waiting for its retry."""
        retry = dg.EventRecordsFilter(event_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
        deadline = time.monotonic() + 300
        while not instance.get_event_records(retry, limit=1) and time.monotonic() < deadline:
            time.sleep(0.2)
        started.append(start_redis_server(port, tmp_path))

    late = threading.Thread(target=start_redis_later)
    instance.add_dynamic_partitions("text_source", ["alpha"])
    dedup = DedupIndexResource(backend="redis", redis_url=f"redis://127.0.0.1:{port}/0", namespace="retry")
    late.start()
    try:
        result = dg.materialize(
            TEXT_PREFILTER[:4], partition_key="alpha", instance=instance, resources=resources_for(home, dedup)
        )
        assert result.success
        retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
        assert retries and all(e.step_key == "exact_deduplicated" for e in retries)
        assert redis.Redis(port=port).hlen(f"{redis_prefix('retry', 'exact')}:claims") > 0
    finally:
        late.join()
        for proc in started:
            proc.terminate()
            proc.wait(timeout=10)
