"""The rule-based chain's parts, this checkout against another, alternating (CPU s, best of ``--repeat``).

Each round runs one fresh process per checkout (``PYTHONPATH`` pointing at it) that times, on the
real corpus (``benchmarks/real_corpus.py``): the clean_documents processor (default config,
fastText labels), PII redaction, the heuristic chain under three configurations (default; with
``min_alpha_words_ratio: null``, where most documents reach every rule, as on web text; with
``gopher_repetition: false``), the stage statistics' whitespace token count, the ftfy gate and the
heuristics' word counts (both on 5,000-document batches, as the stages see them). The parts are
library calls, not Dagster runs: ``bench_chain_dagster.py`` measures those.

``--kernels`` times only the compiled passes, each on the whole corpus in one call (best of
``--repeat``, after a first call that loads the machine code): the heuristics' per-document counts
(``batch_counts``, on the text the clean_documents processor keeps, cleaned once untimed) and
cleaning's invisible-character and whitespace pass (``normalize.tidy_batch`` on the raw text).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_chain_components.py --baseline-code /tmp/base
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
root, mb, repeat, kernels = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "kernels"
sys.path.insert(0, root)
import pandas as pd, pyarrow as pa
import refinery
assert refinery.__file__.startswith(root), refinery.__file__
from benchmarks.real_corpus import ensure_real_corpus
from refinery.clean.cleaning import Cleaner, CleanParams
from refinery.clean.pii import PII_KINDS, redact_batch
from refinery.filters.chain import filter_batch
from refinery.filters.params import HeuristicParams
from refinery.stages.text import CLEAN_DOCUMENTS
from refinery.stats import whitespace_tokens
batches = ensure_real_corpus(mb).iter_batches(columns=("text",))
texts = [t for b in batches for t in b.column("text").to_pylist()]
frame = pd.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts, "source": "bench"})
languages = CLEAN_DOCUMENTS.params().language_id()
Cleaner(CleanParams(), languages)(frame.head(3))
out = {}
def timed(name, fn):
    best, value = float("inf"), None
    for _ in range(repeat):
        started = time.process_time()
        value = fn()
        best = min(best, time.process_time() - started)
    out[name] = round(best, 3)
    return value
arr = pa.array(texts, pa.large_string())
if kernels:
    from refinery.clean.normalize import tidy_batch
    from refinery.text.kernels.doc_counts import batch_counts
    from refinery.text.kernels.utf8 import large_strings
    cleaned = large_strings(Cleaner(CleanParams(), languages)(frame).kept["text"])
    prefixes = HeuristicParams().bullet_prefixes
    batch_counts(cleaned[:3], prefixes), tidy_batch(arr[:3], True, True)
    name = f"compiled doc_counts, {cleaned.nbytes / 1e6:.0f} MB cleaned"
    timed(name, lambda: batch_counts(cleaned, prefixes))
    timed(f"compiled tidy, {arr.nbytes / 1e6:.0f} MB raw", lambda: tidy_batch(arr, True, True))
    print(json.dumps(out))
    sys.exit(0)
clean = timed("clean_documents processor", lambda: Cleaner(CleanParams(), languages)(frame).kept)
timed("PII redaction", lambda: redact_batch(texts, arr, set(PII_KINDS)))
for name, overrides in (
    ("heuristics, default", {}),
    ("heuristics, min_alpha_words_ratio null", {"min_alpha_words_ratio": None}),
    ("heuristics, gopher_repetition off", {"gopher_repetition": False}),
):
    timed(name, lambda o=overrides: filter_batch(clean, HeuristicParams(**o)))
timed("stage statistics' whitespace tokens", lambda: whitespace_tokens(arr))
from refinery.clean import ftfy_gate
from refinery.text.word_counts import word_counts
parts = [texts[i : i + 5000] for i in range(0, len(texts), 5000)]  # the stages' batch size
timed("ftfy gate (fix_texts), 5,000-document batches", lambda: [ftfy_gate.fix_texts(p) for p in parts])
timed("word counts, 5,000-document batches", lambda: [word_counts(p) for p in parts])
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline-code", type=Path, required=True, help="the other checkout")
    parser.add_argument("--real-mb", type=float, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kernels", action="store_true", help="only the compiled passes (see above)")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for name, code in (("this code", ROOT), ("baseline code", args.baseline_code.resolve())):
            env["PYTHONPATH"] = str(code)
            mode = "kernels" if args.kernels else "all"
            cmd = [sys.executable, "-c", CHILD, str(code), str(args.real_mb), str(args.repeat), mode]
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
            parts = json.loads(done.stdout.strip().splitlines()[-1])
            results.setdefault(name, []).append(parts)
            print(f"{name} (load {os.getloadavg()[0]:.1f}): {parts}", flush=True)
    for part in results["this code"][0]:
        ours = min(r[part] for r in results["this code"])
        theirs = min(r[part] for r in results["baseline code"])
        print(f"{part}: {theirs:.3f} -> {ours:.3f} CPU s ({theirs / ours:.2f}x)")
    path = ROOT / "benchmarks" / "out" / ("chain_kernels.json" if args.kernels else "chain_components.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
