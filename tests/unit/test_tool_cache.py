"""Setup's machine-wide tool cache (refinery/tool_cache.py): a fresh clone copies the tiny models and
KenLM's programs that another clone built, through the same entry points setup.sh runs, and builds
them itself when the cache is off, empty or holds something that does not run."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from refinery import tool_cache
from refinery.llm import tiny_chat_model
from refinery.multimodal import tiny_clip_train

REPO = Path(__file__).resolve().parents[2]


def fake_clip(folder: Path, auc: float) -> None:
    """The three files a finished tiny CLIP folder holds (content beside the point here)."""
    folder.mkdir(parents=True)
    (folder / tiny_clip_train.CONFIG_FILE).write_text("{}")
    (folder / tiny_clip_train.WEIGHTS_FILE).write_bytes(b"weights")
    summary = {"matched_cosine": {"p50": 0.9}, "mismatched_cosine": {"p50": 0.0}}
    (folder / tiny_clip_train.EVAL_FILE).write_text(
        json.dumps({"roc_auc": auc, "roc_auc_one_attribute_changed": 0.95, **summary})
    )


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(tool_cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tool_cache.cache_root() == tmp_path / "xdg" / "refinery" / "tools"
    monkeypatch.setenv(tool_cache.CACHE_ENV, str(tmp_path / "c"))
    assert tool_cache.cached_folder("tiny-clip", "abc") == tmp_path / "c" / "tiny-clip" / "abc"
    for off in ("off", "OFF", "0", ""):
        monkeypatch.setenv(tool_cache.CACHE_ENV, off)
        assert tool_cache.cache_root() is None and tool_cache.store("k", "v", tmp_path) is None


def test_a_clone_copies_the_tiny_models_setup_built_in_another(monkeypatch, tmp_path, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv(tool_cache.CACHE_ENV, str(cache))
    digest = tiny_clip_train.DEFAULT_CONFIG.digest()
    fake_clip(cache / tiny_clip_train.CACHE_KIND / digest, auc=0.99)
    # What setup.sh runs in the clone: no training (that would take minutes), the cached folder.
    assert tiny_clip_train.main(["--out", str(tmp_path / "clone")]) == 0
    folder = tmp_path / "clone" / digest
    assert tiny_clip_train.is_built(folder) and "copied from the tool cache" in capsys.readouterr().out
    assert (folder / tiny_clip_train.WEIGHTS_FILE).read_bytes() == b"weights"
    # A cached model below the quality target is reported as setup reports a trained one.
    fake_clip(tmp_path / "low" / "cache" / tiny_clip_train.CACHE_KIND / digest, auc=0.5)
    monkeypatch.setenv(tool_cache.CACHE_ENV, str(tmp_path / "low" / "cache"))
    assert tiny_clip_train.main(["--out", str(tmp_path / "low" / "clone")]) == 1

    chat = cache / tiny_chat_model.CACHE_KIND / tiny_chat_model.DEFAULT_CONFIG.digest()
    chat.mkdir(parents=True)
    (chat / "model.safetensors").write_bytes(b"m")
    (chat / "tokenizer.json").write_text("{}")
    monkeypatch.setenv(tool_cache.CACHE_ENV, str(cache))
    assert tiny_chat_model.main(["--out", str(tmp_path / "chat")]) == 0
    assert tiny_chat_model.is_built(tmp_path / "chat" / tiny_chat_model.DEFAULT_CONFIG.digest())


def test_incomplete_cache_entries_are_misses_and_store_replaces_them(monkeypatch, tmp_path):
    monkeypatch.setenv(tool_cache.CACHE_ENV, str(tmp_path / "cache"))
    half = tmp_path / "cache" / "tiny-clip" / "k"
    half.mkdir(parents=True)
    (half / tiny_clip_train.CONFIG_FILE).write_text("{}")  # an interrupted copy: no weights
    target = tmp_path / "clone" / "k"
    assert not tool_cache.restore("tiny-clip", "k", target, tiny_clip_train.is_built)
    assert not target.exists()
    fake_clip(tmp_path / "built", auc=0.99)
    assert tool_cache.store("tiny-clip", "k", tmp_path / "built") == half
    assert tool_cache.restore("tiny-clip", "k", target, tiny_clip_train.is_built)
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in (tmp_path / "built").iterdir())
    assert not list(half.parent.glob(".*.tmp"))  # no staging folder left behind


def kenlm_key() -> str:
    """The cache key scripts/build_kenlm.sh uses: KenLM's version, the machine, the script's hash."""
    script = hashlib.sha256((REPO / "scripts" / "build_kenlm.sh").read_bytes()).hexdigest()[:12]
    return f"{metadata.version('kenlm')}-{platform.machine()}-{script}"


def run_build_kenlm(prefix: Path, cache: str, **extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "REFINERY_KENLM_PREFIX": str(prefix), tool_cache.CACHE_ENV: cache, **extra}
    env["PYTHON"] = sys.executable  # the script's python when the checkout has no .venv of its own
    env.pop("KENLM_SDIST", None)
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "build_kenlm.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )


def test_build_kenlm_copies_programs_from_the_cache_and_refuses_ones_that_do_not_run(tmp_path):
    cached = tmp_path / "cache" / "kenlm" / kenlm_key()
    cached.mkdir(parents=True)
    # Stand-ins with lmplz's usage text: the script checks that a copy runs before it trusts it.
    (cached / "lmplz").write_text("#!/bin/sh\necho 'Builds unpruned language models. --order arg'\nexit 1\n")
    (cached / "build_binary").write_text("#!/bin/sh\nexit 0\n")
    for program in cached.iterdir():
        program.chmod(0o755)
    done = run_build_kenlm(tmp_path / "kenlm", str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    assert "copied lmplz and build_binary from the tool cache" in done.stdout
    assert (tmp_path / "kenlm" / "bin" / "lmplz").read_bytes() == (cached / "lmplz").read_bytes()
    again = run_build_kenlm(tmp_path / "kenlm", str(tmp_path / "cache"))
    assert "already in" in again.stdout  # the clone's own copy from now on

    (cached / "lmplz").write_text("#!/bin/sh\nexit 127\n")  # e.g. built against another libboost
    # No build here (minutes): a missing TMPDIR stops the script where the build would begin.
    broken = run_build_kenlm(tmp_path / "other", str(tmp_path / "cache"), TMPDIR=str(tmp_path / "none"))
    assert "do not run here; building" in broken.stderr and broken.returncode != 0
    assert "copied" not in broken.stdout
