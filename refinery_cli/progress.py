"""What `refinery run` and `refinery demo` print: a line a stage, not Dagster's debug stream.

Two Dagster loggers, used by the CLI's runs (run config ``loggers``): ``refinery_progress`` prints
one line when a stage starts running for a while and one when it ends, with rows in, rows out and
the top removal reasons, plus a ticker on stages that run long; ``refinery_log_file`` writes the
full debug log to a file whose path the CLI prints. Runs launched from the UI or the daemon keep
Dagster's usual console logger.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, TextIO

import dagster as dg

TICK_SECONDS = 15.0


class StageLines:
    """Turns a run's structured events into a few lines a person reads."""

    def __init__(self, out: TextIO = sys.stdout, tick_seconds: float = TICK_SECONDS):
        self.out, self.tick_seconds = out, tick_seconds
        self._running: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def event(self, event: Any) -> None:
        kind = event.event_type_value
        step = event.step_key or ""
        if kind == "STEP_START":
            with self._lock:
                self._running[step] = time.monotonic()
        elif kind == "ASSET_MATERIALIZATION":
            self._materialized(event)
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"):
            with self._lock:
                started = self._running.pop(step, None)
            if kind == "STEP_FAILURE":
                error = event.event_specific_data.error
                message = (error.cause or error).message.strip().splitlines()[-1] if error else ""
                self._print(f"  FAILED  {step}  {message[:160]}")
            elif kind == "STEP_SKIPPED":
                self._print(f"  skipped {step}")
            elif started is not None and time.monotonic() - started > self.tick_seconds:
                self._print(f"          {step} done in {time.monotonic() - started:.0f}s")

    def _materialized(self, event: Any) -> None:
        data = event.event_specific_data.materialization
        meta = {k: getattr(v, "value", v) for k, v in data.metadata.items()}
        name = data.asset_key.to_user_string() + (f"[{data.partition}]" if data.partition else "")
        if "rows_in" in meta:
            reasons = meta.get("top_reasons") or ""
            line = f"  ok      {name:<42} {meta['rows_in']:>8,} in → {meta['rows_out']:>8,} out"
            self._print(line + (f"   removed: {reasons}" if reasons else ""))
        else:
            rows = meta.get("dagster/row_count")
            self._print(f"  ok      {name:<42}" + (f" {rows:>8,} rows" if rows is not None else ""))

    def _tick(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            with self._lock:
                running = [(s, time.monotonic() - t) for s, t in self._running.items()]
            for step, seconds in running:
                if seconds >= self.tick_seconds:
                    self._print(f"  …       {step} running for {seconds:.0f}s")

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def close(self) -> None:
        self._stop.set()


class _EventHandler(logging.Handler):
    def __init__(self, lines: StageLines):
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "dagster_meta", {}).get("dagster_event")
        if event is not None:
            self.lines.event(event)


@dg.logger(
    {"tick_seconds": dg.Field(float, default_value=TICK_SECONDS)},
    description="One line per stage (rows in/out, top reasons) and a ticker on long stages.",
)
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.getLogger(f"refinery.progress.{id(init_context)}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.handlers = [_EventHandler(StageLines(tick_seconds=init_context.logger_config["tick_seconds"]))]
    return logger


@dg.logger({"path": dg.Field(str)}, description="Dagster's full debug log, appended to a file.")
def file_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.getLogger(f"refinery.file.{id(init_context)}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = logging.FileHandler(init_context.logger_config["path"], encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.handlers = [handler]
    return logger


LOGGERS = {
    "console": dg.colored_console_logger,
    "refinery_progress": progress_logger,
    "refinery_log_file": file_logger,
}


def cli_loggers(log_path: str) -> dict:
    """The run-config ``loggers`` block of a CLI run."""
    return {"refinery_progress": {"config": {}}, "refinery_log_file": {"config": {"path": log_path}}}
