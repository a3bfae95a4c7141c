"""`refinery plan` through the CLI: the inbox sampled, hours from the measured rates, and a warning
when a step's memory exceeds a node's."""

from __future__ import annotations

import json

import pytest

from refinery.plan import sample_inbox
from refinery.plan_command import parse_size
from refinery_cli import commands as cli


def _inbox(tmp_path, docs: int = 300) -> None:
    folder = tmp_path / "home" / "inbox" / "text" / "web"
    folder.mkdir(parents=True)
    lines = (json.dumps({"id": str(i), "text": f"document {i} " + "word " * 40}) for i in range(docs))
    (folder / "part.jsonl").write_text("\n".join(lines) + "\n")


def test_the_inbox_is_sampled_by_bytes_and_documents(tmp_path):
    _inbox(tmp_path)
    inbox = sample_inbox(tmp_path / "home" / "inbox" / "text")
    assert inbox.documents == 300 and inbox.bytes > 300 * 200 and list(inbox.sources) == ["web"]


def test_plan_prints_every_stage_and_warns_when_the_step_outgrows_a_node(tmp_path, capsys):
    _inbox(tmp_path)
    rates = tmp_path / "rates"
    rates.mkdir()
    (rates / "r.json").write_text(json.dumps({"clean_documents": {"mb_s_per_core": 1.0},
                                              "corpus_fuzzy_dedup": {"mb_s_per_core": 2.0}}))  # fmt: skip
    home = str(tmp_path / "home")
    assert cli.main(["--home", home, "plan", "--rates", str(rates), "--nodes", "2", "--cores", "4"]) == 0
    small = capsys.readouterr().out
    assert "| clean_documents |" in small and "| corpus_fuzzy_dedup |" in small and "WARNING" not in small
    assert "| heuristic_filtered | – | – |" in small  # no rate given: said, not invented
    assert "| raw_documents | – | – |" in small and "| quality_scored | – | – |" in small  # all listed
    argv = ["--home", home, "plan", "--rates", str(rates), "--scale-to", "1TB", "--memory-gb", "16"]
    assert cli.main([*argv, "--nodes", "10", "--cores", "10"]) == 0
    big = capsys.readouterr().out
    row = next(line for line in big.splitlines() if line.startswith("| clean_documents |"))
    cpu_hours, wall_hours = (float(x.replace(",", "")) for x in row.split("|")[2:4])
    assert cpu_hours == pytest.approx(1e12 / 1e6 / 1.0 / 3600, rel=1e-3)
    assert wall_hours == pytest.approx(cpu_hours / 100, abs=0.01)  # 100 cores
    assert "the Dagster step needs" not in big  # no stage gathers a partition into the step
    assert "WARNING: document_embeddings: 10 tasks of 1,700 MB" in big  # an actor's model and batch
    assert "WARNING: fuzzy_deduplicated" not in big and "WARNING: perplexity_scored" not in big
    assert "WARNING: corpus_fuzzy_dedup" not in big  # its step holds per-piece metadata only
    # 100 TB in one source: perplexity's step would hold one sketch per part, past a 4 GB node.
    argv = ["--home", home, "plan", "--rates", str(rates), "--scale-to", "100TB", "--memory-gb", "4"]
    assert cli.main(argv) == 0
    assert "WARNING: perplexity_scored: the Dagster step needs" in capsys.readouterr().out


def test_sizes_parse():
    assert parse_size("1TB") == 1e12 and parse_size("2.5 gb") == 2.5e9 and parse_size("1000") == 1000
