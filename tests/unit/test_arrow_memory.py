"""refinery.arrow_memory: mimalloc's purge delay is set before pyarrow loads, and never overrides a
choice already made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from refinery import arrow_memory
from refinery.arrow_memory import PURGE_DELAY_MS, PURGE_DELAY_VARIABLE, hold_freed_arrow_pages

REPO = Path(__file__).resolve().parents[2]


def test_sets_the_delay_when_pyarrow_is_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PURGE_DELAY_VARIABLE, raising=False)
    monkeypatch.delitem(sys.modules, "pyarrow", raising=False)
    assert hold_freed_arrow_pages() is True
    assert os.environ[PURGE_DELAY_VARIABLE] == str(PURGE_DELAY_MS)


def test_an_explicit_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PURGE_DELAY_VARIABLE, "10")
    monkeypatch.delitem(sys.modules, "pyarrow", raising=False)
    assert hold_freed_arrow_pages() is False
    assert os.environ[PURGE_DELAY_VARIABLE] == "10"


def test_too_late_once_pyarrow_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """mimalloc read its options when pyarrow's library loaded: setting the variable now would only
    mislead (and reach child processes that did not ask for it)."""
    monkeypatch.delenv(PURGE_DELAY_VARIABLE, raising=False)
    monkeypatch.setitem(sys.modules, "pyarrow", arrow_memory)
    assert hold_freed_arrow_pages() is False
    assert PURGE_DELAY_VARIABLE not in os.environ


def test_the_cli_process_sets_it_before_pyarrow_loads() -> None:
    """In a fresh process, as ``dagster asset materialize -m definitions`` loads: the variable is set,
    and the ``refinery`` package (which sets it) finished importing before pyarrow started to."""
    env = {k: v for k, v in os.environ.items() if k != PURGE_DELAY_VARIABLE}
    env["PYTHONPATH"] = str(REPO)
    script = f"import definitions, os; print('delay', os.environ.get({PURGE_DELAY_VARIABLE!r}))"
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", script], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"delay {PURGE_DELAY_MS}" in out.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line]
    # -X importtime prints a module when its import completes: pyarrow's starts after refinery's ends
    # exactly when no pyarrow module completes before the refinery package does.
    first_pyarrow = next(i for i, name in enumerate(imported) if name.split(".")[0] == "pyarrow")
    assert imported.index("refinery") < first_pyarrow
