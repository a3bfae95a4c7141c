"""examples/adaptive_training.py end to end at a toy size, in a subprocess: it builds its corpus and
schedule, trains static and adaptive with a DataLoader worker following the weight log, and writes
the plot and the numbers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_trains_both_runs_and_writes_its_plot(tmp_path):
    pytest.importorskip("torch")
    plot, out = tmp_path / "weights.png", tmp_path / "numbers.json"
    args = "--steps 24 --docs-per-step 8 --seq-len 32 --d-model 16 --layers 1 --eval-every 12 --held-out 8"
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "examples/adaptive_training.py",
            *args.split(),
            "--plot",
            str(plot),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    numbers = json.loads(out.read_text())
    assert numbers["domains"] == ["docstrings", "licenses", "noise", "prose"]
    assert len(numbers["trajectory"]) == 24 and all(
        abs(sum(e["weights"]) - 1) < 1e-9 for e in numbers["trajectory"]
    )
    for run in ("static", "adaptive"):
        assert sum(numbers[run]["seen"].values()) == 24 * 8  # the same budget
        assert [h["step"] for h in numbers[run]["history"]] == [12, 24]
    assert "adaptive beats static" in done.stdout or "adaptive does not beat static" in done.stdout
