"""Every tool call an agent makes, one JSON line each: time, tool, arguments, outcome, seconds.

Written to ``$REFINERY_HOME/logs/mcp-calls.jsonl`` (appended, flushed per line) and to the
``refinery.mcp`` logger, so an operator can audit afterwards what an agent asked for and got.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

logger = logging.getLogger("refinery.mcp")


class CallLog:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def record(
        self, tool: str, arguments: dict, outcome: str, seconds: float, error: str | None = None
    ) -> None:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
            "tool": tool,
            "arguments": arguments,
            "outcome": outcome,
            "seconds": round(seconds, 3),
        }
        if error is not None:
            entry["error"] = error
        line = json.dumps(entry, default=str, sort_keys=True)
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        logger.info("tool call %s", line)
