"""``redact_batch`` (clean_documents' PII redaction) of this checkout against another, alternating.

Each round runs one fresh process per checkout (``PYTHONPATH`` pointing at it) that reads the real
corpus (``benchmarks/real_corpus.py``), repairs and tidies it as ``clean_batch`` does before the
redaction (``fix_unicode_batch``, ``tidy_batch`` with the default options), cuts it into
5,000-document batches as the stage's batches come, and times ``redact_batch`` with every kind and
the default placeholder over all of them: the first pass (fresh pages, cold allocator) and the best
of ``--passes`` more. Reported per process: CPU seconds of each, MB/s per core of the first, and a
SHA-256 of the texts and counts, which must be equal between the checkouts. ``--reference`` also
checks this checkout's batch result against the per-document ``redact`` (slow: Python's regexes
over every document).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_pii_batch.py --baseline-code /tmp/base --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import run_in_checkout  # noqa: E402

CHILD = r"""
import hashlib, json, sys, time
root, mb, passes, reference = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
sys.path.insert(0, root)
import pyarrow as pa
import refinery
assert refinery.__file__.startswith(root), refinery.__file__
from benchmarks.real_corpus import ensure_real_corpus
from refinery.clean import normalize
from refinery.clean.pii import PII_KINDS, redact, redact_batch
table = pa.Table.from_batches(list(ensure_real_corpus(mb).iter_batches(columns=("text",))))
raw = table.column("text").combine_chunks().cast(pa.large_string())
fixed = pa.array(normalize.fix_unicode_batch(raw.to_pylist()), pa.large_string())
tidy = normalize.tidy_batch(fixed, True, True)
batches = [(tidy.slice(s, 5000), tidy.slice(s, 5000).to_pylist()) for s in range(0, len(tidy), 5000)]
size = sum(len(t.encode()) for _, texts in batches for t in texts) / 1e6
kinds = set(PII_KINDS)
warm = ["a@b.cc 10.0.0.1"]
redact_batch(warm, pa.array(warm, pa.large_string()), kinds)  # builds the candidate patterns
times, results = [], None
for _ in range(1 + passes):
    start = time.process_time()
    results = [redact_batch(texts, arr, kinds) for arr, texts in batches]
    times.append(time.process_time() - start)
texts = [t for out, _ in results for t in out]
counts = [c for _, cs in results for c in cs]
digest = hashlib.sha256(json.dumps([texts, counts]).encode()).hexdigest()[:16]
out = {"first_s": round(times[0], 3), "best_s": round(min(times[1:] or times), 3), "mb": round(size, 2),
       "documents": len(texts), "redactions": sum(sum(c.values()) for c in counts), "sha256": digest}
if reference:
    every = [t for _, batch in batches for t in batch]
    expected = [redact(t, kinds) for t in every]
    out["differ_from_redact"] = sum((t, c) != e for t, c, e in zip(texts, counts, expected, strict=True))
print(json.dumps(out))
"""


def run(code: Path, mb: float, passes: int, reference: bool) -> dict:
    return run_in_checkout(code, CHILD, str(code), str(mb), str(passes), "1" if reference else "0")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline-code", type=Path, required=True, help="the other checkout")
    parser.add_argument("--real-mb", type=float, default=105)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=2, help="passes after the first, for the best")
    parser.add_argument("--reference", action="store_true", help="also check against per-document redact")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"this code": [], "baseline code": []}
    for round_ in range(args.rounds):
        for name, code in (("this code", ROOT), ("baseline code", args.baseline_code)):
            out = run(code, args.real_mb, args.passes, args.reference and name == "this code" and round_ == 0)
            runs[name].append(out)
            print(f"round {round_ + 1} {name}: {out}", flush=True)
    same = all(o["sha256"] == runs["this code"][0]["sha256"] for outs in runs.values() for o in outs)
    for name, outs in runs.items():
        first = statistics.median(o["first_s"] for o in outs)
        best = statistics.median(o["best_s"] for o in outs)
        print(
            f"{name}: median first pass {first:.3f} CPU s ({outs[0]['mb'] / first:.1f} MB/s per core), "
            f"median best later pass {best:.3f} CPU s ({outs[0]['documents']} documents, "
            f"{outs[0]['redactions']} redactions)"
        )
    print(f"texts and counts equal in every run: {same}")
    if not same:
        raise SystemExit("the checkouts' outputs differ")
    if any(o.get("differ_from_redact") for o in runs["this code"]):
        raise SystemExit("the batch differs from per-document redact")


if __name__ == "__main__":
    main()
