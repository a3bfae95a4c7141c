"""clean_documents' processor as the stage runs it, this checkout against another, alternating.

Each round runs one fresh process per checkout (``PYTHONPATH`` pointing at it) that reads the real
corpus (``benchmarks/real_corpus.py``), cuts it into 5,000-document frames as the stage's batches
come, and runs the default ``Cleaner`` (``clean_documents``' default config: ftfy gate, NFC,
invisible characters and whitespace, PII, fastText labels) over them. Reported per process: CPU
seconds of the whole pass, the first batch's one-off loads included (the fastText model, numba's
kernels, the regex tables), and MB/s per core; and whether both checkouts' kept and rejected frames
are equal (every column; a SHA-256 of each frame's Parquet bytes). Library calls, not Dagster runs:
``bench_chain_dagster.py`` measures those.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_clean_processor.py --real-mb 105 \\
        --baseline-code /tmp/base --rounds 3
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
import hashlib, io, json, sys, time
root, mb = sys.argv[1], float(sys.argv[2])
sys.path.insert(0, root)
import pandas as pd, pyarrow as pa
import refinery
assert refinery.__file__.startswith(root), refinery.__file__
from benchmarks.real_corpus import ensure_real_corpus
from refinery.clean.cleaning import Cleaner, CleanParams
from refinery.stages.text import CLEAN_DOCUMENTS
table = pa.Table.from_batches(list(ensure_real_corpus(mb).iter_batches(columns=("text",))))
texts = table.column("text").combine_chunks().cast(pa.large_string())
rows = pa.table({"id": pa.array([f"d{i}" for i in range(len(texts))]), "text": texts})
frames = [rows.slice(s, 5000).to_pandas() for s in range(0, len(rows), 5000)]
size = sum(len(t.encode()) for t in texts.to_pylist()) / 1e6
languages = CLEAN_DOCUMENTS.params().language_id()
start = time.process_time()
cleaner = Cleaner(CleanParams(), languages)
results = [cleaner(frame) for frame in frames]
cpu = time.process_time() - start
digest = {}
for part in ("kept", "rejected"):
    buf = io.BytesIO()
    pd.concat([getattr(r, part) for r in results]).to_parquet(buf)
    digest[part] = hashlib.sha256(buf.getvalue()).hexdigest()[:16]
print(json.dumps({"cpu_s": round(cpu, 3), "mb": round(size, 2), "documents": len(texts), **digest}))
"""


def run(code: Path, mb: float) -> dict:
    return run_in_checkout(code, CHILD, str(code), str(mb))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline-code", type=Path, required=True, help="the other checkout")
    parser.add_argument("--real-mb", type=float, default=105)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"this code": [], "baseline code": []}
    for round_ in range(args.rounds):
        for name, code in (("this code", ROOT), ("baseline code", args.baseline_code)):
            out = run(code, args.real_mb)
            runs[name].append(out)
            print(f"round {round_ + 1} {name}: {out}", flush=True)
    same = all(
        (a["kept"], a["rejected"]) == (b["kept"], b["rejected"])
        for a, b in zip(runs["this code"], runs["baseline code"], strict=True)
    )
    for name, outs in runs.items():
        cpu = statistics.median(o["cpu_s"] for o in outs)
        print(
            f"{name}: median {cpu:.2f} CPU s, {outs[0]['mb'] / cpu:.2f} MB/s per core "
            f"({outs[0]['documents']} documents)"
        )
    print(f"kept and rejected frames equal in every round: {same}")
    if not same:
        raise SystemExit("the checkouts' outputs differ")


if __name__ == "__main__":
    main()
