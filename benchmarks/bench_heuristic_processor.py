"""heuristic_filtered's processor (``filter_batch``) as the stage runs it, this checkout against
another, alternating.

The real corpus (``benchmarks/real_corpus.py``) is cleaned once, by this checkout's default
``Cleaner`` (``clean_documents``' default config), into a Parquet file; each round then runs one
fresh process per checkout (``PYTHONPATH`` pointing at it) that reads it in the stage's
5,000-document batches and runs ``filter_batch`` with the default ``HeuristicParams`` over them.
Reported per process: CPU seconds of the whole pass (user and system apart), numba's first-call load
of the counting kernel included (it is also given alone: ``first_call_s``, a 20-document call made
before the pass); and whether both checkouts' kept and rejected frames are equal (every column; a
SHA-256 of each frame's Parquet bytes). Library calls, not Dagster runs: ``bench_chain_dagster.py``
measures those.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_heuristic_processor.py --real-mb 105 \\
        --baseline-code /tmp/base --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import run_in_checkout  # noqa: E402

CHILD = r"""
import hashlib, io, json, resource, sys, time
root, path = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
import pandas as pd, pyarrow.parquet as pq
import refinery
assert refinery.__file__.startswith(root), refinery.__file__
from refinery.filters.chain import filter_batch
from refinery.filters.params import HeuristicParams
frames = [b.to_pandas() for b in pq.ParquetFile(path).iter_batches(batch_size=5000)]
params = HeuristicParams()
before = resource.getrusage(resource.RUSAGE_SELF)
start = time.process_time()
filter_batch(frames[0].head(20), params)
first = time.process_time() - start
results = [filter_batch(frame, params) for frame in frames]
cpu = time.process_time() - start
after = resource.getrusage(resource.RUSAGE_SELF)
digest = {}
for part in ("kept", "rejected"):
    buf = io.BytesIO()
    pd.concat([getattr(r, part) for r in results]).to_parquet(buf)
    digest[part] = hashlib.sha256(buf.getvalue()).hexdigest()[:16]
print(json.dumps({
    "cpu_s": round(cpu, 3),
    "user_s": round(after.ru_utime - before.ru_utime, 3),
    "system_s": round(after.ru_stime - before.ru_stime, 3),
    "first_call_s": round(first, 3),
    "documents": sum(map(len, frames)),
    **digest,
}))
"""


def cleaned_corpus(mb: float, path: Path) -> float:
    """The real corpus through the default ``Cleaner``, written to ``path``; its cleaned text's MB."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.real_corpus import ensure_real_corpus
    from refinery.clean.cleaning import Cleaner, CleanParams
    from refinery.stages.text import CLEAN_DOCUMENTS

    texts = [
        t
        for b in ensure_real_corpus(mb).iter_batches(columns=("text",))
        for t in b.column("text").to_pylist()
    ]
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts})
    clean = Cleaner(CleanParams(), CLEAN_DOCUMENTS.params().language_id())(frame).kept
    pq.write_table(pa.Table.from_pandas(clean, preserve_index=False), path, compression="zstd")
    return sum(len(t.encode()) for t in clean["text"].tolist()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline-code", type=Path, required=True, help="the other checkout")
    parser.add_argument("--real-mb", type=float, default=105)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"this code": [], "baseline code": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clean.parquet"
        mb = cleaned_corpus(args.real_mb, path)
        for round_ in range(args.rounds):
            for name, code in (("this code", ROOT), ("baseline code", args.baseline_code)):
                out = run_in_checkout(code, CHILD, str(code), str(path))
                runs[name].append(out)
                print(f"round {round_ + 1} {name}: {out}", flush=True)
    same = all(
        (a["kept"], a["rejected"]) == (b["kept"], b["rejected"])
        for a, b in zip(runs["this code"], runs["baseline code"], strict=True)
    )
    for name, outs in runs.items():
        cpu = statistics.median(o["cpu_s"] for o in outs)
        user = statistics.median(o["user_s"] for o in outs)
        system = statistics.median(o["system_s"] for o in outs)
        print(
            f"{name}: median {cpu:.3f} CPU s (user {user:.3f}, system {system:.3f}), "
            f"{mb / cpu:.1f} MB/s per core ({outs[0]['documents']} documents, {mb:.1f} MB cleaned)"
        )
    print(f"kept and rejected frames equal in every round: {same}")
    if not same:
        raise SystemExit("the checkouts' outputs differ")


if __name__ == "__main__":
    main()
