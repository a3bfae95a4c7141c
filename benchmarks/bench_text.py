"""Text pipeline benchmark: cleaning, heuristic filters and fuzzy dedup next to datatrove and datasketch.

One corpus per run: the generated one (``--corpus generated``, ``benchmarks/corpus.py``) or real
documents from this machine (``--corpus real``, ``benchmarks/real_corpus.py``), reused if cached.
The harness (timing, RSS, isolated runs) is ``benchmarks/harness.py``, the components are
``benchmarks/adapters.py`` and the tables ``benchmarks/render.py``. Every component runs
alone in a fresh process (multiprocessing "spawn", numeric libraries pinned to one thread) and
reports documents/s and MB/s per core (UTF-8 bytes / CPU seconds of that process) and peak RSS
(VmHWM of that process, interpreter and imports included).

- ours: cleaning (``Cleaner``) next to the per-document path with ftfy on every document (the
  output it must equal); the whole rule-based chain (clean → heuristics → exact → fuzzy as library
  calls per batch); the heuristic chain (``refinery.filters.chain.filter_batch``, language gate off, since
  datatrove has none), MinHash signatures (``MinHasher(128, 5, seed=1).signatures``) and fuzzy
  dedup end to end (``FuzzyDeduper`` over a ``SqliteFuzzyIndex``: signatures, LSH query and insert,
  verification). All stream the whole corpus in batches; the chain and the dedup are also run on
  the first 25% and 50% of it to show how peak RSS depends on corpus size.
- datatrove: ``GopherQualityFilter`` → ``GopherRepetitionFilter`` → ``C4QualityFilter`` with default
  parameters, a document removed by one not passed to the next; ``MinhashDedupSignature.run`` with
  5-grams and 16 buckets × 8 hashes (= 128) into a temporary folder.
- datasketch: per document ``MinHash(num_perm=128)`` and ``update_batch`` of its lowercased
  whitespace word 5-grams as UTF-8 bytes (and, as a faster variant, with shared permutations).

Baselines are slow, so they run on a deterministic uniform random subset of the corpus
(``--baseline-docs``); ours runs on that subset too, so both kinds of ratio are shown. Keep/remove
agreement with datatrove is measured on the subset.

    .venv/bin/python -m benchmarks.bench_text --corpus generated --docs 200000 --baseline-docs 20000
    .venv/bin/python -m benchmarks.bench_text --corpus real --baseline-docs 3000

Results: a table on stdout, ``benchmarks/out/text_<corpus>.md`` (a section for RESULTS.md) and
``benchmarks/out/text_<corpus>.json``. The headline ratios compare ours and the baseline on the same
documents (the subset).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import adapters as A
from benchmarks.corpus import ensure_corpus
from benchmarks.harness import SINGLE_THREAD_ENV, dps, machine_info, mbps, run_isolated
from benchmarks.real_corpus import ensure_real_corpus
from benchmarks.render import agreement, print_table, render

OUT = Path(__file__).resolve().parent / "out"
PACKAGES = [
    "refinery",
    "numpy",
    "pandas",
    "pyarrow",
    "datasketch",
    "datatrove",
    "spacy",
    "nltk",
    "regex",
    "tokenizers",
    "xxhash",
]


# -- measuring inside a worker process ------------------------------------------------------------


def plan_for(subset, bs: int) -> list[tuple[str, object, dict]]:
    """Every component, with the rows it runs on (None: the whole corpus)."""
    return [
        ("ours_clean", A.ours_clean, {"batch_size": bs}),
        ("ours_clean_subset", A.ours_clean, {"batch_size": bs, "rows": subset}),
        ("clean_reference", A.clean_reference, {"batch_size": 2_000, "rows": subset}),
        ("ours_chain", A.ours_chain, {"batch_size": bs}),
        ("ours_chain_subset", A.ours_chain, {"batch_size": bs, "rows": subset, "decisions": True}),
        ("ours_minhash", A.ours_minhash, {"batch_size": bs}),
        ("ours_minhash_subset", A.ours_minhash, {"batch_size": bs, "rows": subset}),
        ("ours_fuzzy", A.ours_fuzzy, {"batch_size": bs}),
        ("ours_rule_chain", A.ours_rule_chain, {"batch_size": bs}),
        ("ours_rule_chain_subset", A.ours_rule_chain, {"batch_size": bs, "rows": subset}),
        ("datatrove_chain", A.datatrove_chain, {"batch_size": 2_000, "rows": subset}),
        ("datatrove_minhash", A.datatrove_minhash, {"batch_size": 2_000, "rows": subset}),
        (
            "datasketch",
            A.datasketch_minhash,
            {"batch_size": 2_000, "rows": subset, "shared_permutations": False},
        ),
        (
            "datasketch_shared_perm",
            A.datasketch_minhash,
            {"batch_size": 2_000, "rows": subset, "shared_permutations": True},
        ),
        ("rensa", A.rensa_minhash, {"batch_size": 2_000, "rows": subset}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", choices=("generated", "real"), default="generated")
    parser.add_argument("--docs", type=int, default=200_000, help="generated corpus size")
    parser.add_argument("--real-mb", type=float, default=24, help="real corpus size cap (real_corpus.py)")
    parser.add_argument("--seed", type=int, default=0, help="corpus and subset seed")
    parser.add_argument("--baseline-docs", type=int, default=20_000, help="documents the baselines run on")
    parser.add_argument("--batch-size", type=int, default=5_000, help="documents per batch for ours")
    parser.add_argument(
        "--scales", default="0.25,0.5", help="shares of the corpus to rerun our chain and dedup on (memory)"
    )
    parser.add_argument("--skip", default="", help="comma-separated components to leave out")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/out/text_<corpus>.md")
    args = parser.parse_args()
    os.environ.update(SINGLE_THREAD_ENV)  # inherited by every spawned worker
    skip = {s for s in args.skip.split(",") if s}
    started = time.perf_counter()
    out = args.out or OUT / f"text_{args.corpus}.md"

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    info = machine_info(PACKAGES)
    if args.corpus == "real":
        corpus = ensure_real_corpus(args.real_mb, log=log)
    else:
        corpus = ensure_corpus(args.docs, args.seed, log=log)
    subset = corpus.sample_rows(args.baseline_docs, args.seed)
    log(
        f"corpus {corpus.path}: {corpus.docs:,} docs, {corpus.bytes / 1e6:,.1f} MB; "
        f"baseline subset {len(subset):,}"
    )
    bs = args.batch_size
    runs: dict[str, dict] = {}
    for key, fn, kwargs in plan_for(subset, bs):
        if key in skip or key.removesuffix("_subset") in skip:
            continue
        log(f"{key} …")
        runs[key] = run_isolated(fn, corpus=corpus, **kwargs)
        x = runs[key]
        log(
            f"{key}: {x['docs']:,} docs, {mbps(x):,.2f} MB/s per core, {dps(x):,.0f} docs/s per core, "
            f"peak RSS {x['peak_rss_mb']:,.0f} MB ({x['process_wall_s']:,.0f}s)"
        )

    scaling: dict[str, dict[str, dict]] = {}
    shares = [float(s) for s in args.scales.split(",") if s]
    for comp, fn in (
        ("ours_chain", A.ours_chain),
        ("ours_fuzzy", A.ours_fuzzy),
        ("ours_clean", A.ours_clean),
    ):
        if comp not in runs:
            continue
        scaling[comp] = {"1.0": runs[comp]}
        for share in shares:
            limit = max(1, round(corpus.docs * share))
            log(f"{comp} on {share:.0%} of the corpus ({limit:,} docs) …")
            scaling[comp][str(share)] = run_isolated(fn, corpus=corpus, batch_size=bs, limit=limit)
            log(f"{comp} {share:.0%}: peak RSS {scaling[comp][str(share)]['peak_rss_mb']:,.0f} MB")

    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python -m benchmarks.bench_text " + " ".join(map(shlex.quote, sys.argv[1:])),
        "machine": info,
        "load_average_at_end": os.getloadavg(),
        "config": {
            "corpus": args.corpus,
            "docs": corpus.docs,
            "seed": args.seed,
            "baseline_docs": len(subset),
            "batch_size": bs,
            "num_perm": A.NUM_PERM,
            "ngram": A.NGRAM,
        },
        "corpus": corpus.describe(),
        "runs": runs,
        "scaling": scaling,
    }
    if "ours_chain_subset" in runs and "datatrove_chain" in runs:
        results["agreement"] = agreement(
            runs["ours_chain_subset"]["decisions"],
            runs["datatrove_chain"]["decisions"],
            runs["datatrove_chain"]["kinds"],
        )
    for x in runs.values():  # per-document decisions are for the agreement only
        x.pop("decisions", None)
        x.pop("kinds", None)
    print_table(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(results), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    log(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
