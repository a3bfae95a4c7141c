"""The GPU path (model actors fed by decode tasks) with and without an actor killed mid-slice.

The shape of the seventh session's known weakness (benchmarks/RESULTS.md, "The GPU path without the
hang"): a loopback cluster of two nodes of one CPU, ``dispatch="actors"`` with ``num_gpus=0`` (the
same code path a GPU pool runs), two model actors of half a CPU and decode tasks asking for
``--decode-cpus`` beside them. Each round runs the embedder first on whole-CPU actors (as the test
file does: its actors, killed at the end, may still hold a node while the next stage's actors are
placed), then the quality classifier through ``run_pooled`` over ``--docs`` documents in slices of 5
rows, once as is and once with the first model call in the cluster killing its own process
(``os._exit``: Ray restarts the actor). Reported per run: wall seconds of the classifier's run, the
pool's shape (decode CPUs, slices decoded by tasks and by actors, restarts, sizings redone); every
run's scores are checked equal to the unkilled run's.

Runs the code it is started from: run it from a worktree of the code before to compare.

    flock /tmp/refinery-heavy.lock .venv/bin/python -m benchmarks.bench_actor_restart --rounds 3
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SHAPE_KEYS = (
    "decode_cpus",
    "slices_decoded_by_tasks",
    "slices_decoded_by_actors",
    "actor_restarts",
    "decode_resized",
)


def _inputs(tmp: Path, docs: int) -> tuple[Path, Path]:
    from refinery.quality.classifier import save_classifier, train_classifier
    from refinery.sample import prose
    from tests.unit.test_quality_classifier import PARAMS, junk

    rng = random.Random(4)
    texts = [prose.article(rng, paragraphs=1) for _ in range(docs)]
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(docs)], "text": texts})
    frame["key"] = "src/" + frame["id"]
    folder = tmp / "part"
    folder.mkdir()
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), folder / "part-0.parquet", row_group_size=5
    )
    rng = random.Random(8)
    positives = [(f"ref/{i}", prose.article(rng, paragraphs=2)) for i in range(40)]
    negatives = [(f"web/{i}", junk(rng)) for i in range(40)]
    model = tmp / "classifier.safetensors"
    save_classifier(train_classifier(positives, negatives, PARAMS), model)
    return folder, model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--docs", type=int, default=40)
    p.add_argument("--decode-cpus", type=float, default=1.0)
    p.add_argument("--timeout", type=int, default=120, help="seconds before a run counts as hung")
    args = p.parse_args()
    import ray

    from refinery.engine.loopback import start_loopback_cluster
    from refinery.engine.model_pool import ModelPool, ModelStage, run_model_stage, run_pooled
    from refinery.engine.ray_engine import RayEngine
    from tests.ray import model_loads

    root = Path(__file__).resolve().parents[1]
    load = Path("/proc/loadavg").read_text().strip()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load {load}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="actor-restart-") as name:
        tmp = Path(name)
        folder, model = _inputs(tmp, args.docs)
        cluster = start_loopback_cluster(2, 1, env={"PYTHONPATH": str(root)})
        try:
            engine = RayEngine(
                address=cluster.address, node_ip_address="127.0.0.1", slice_rows=5, dispatch="actors"
            )
            whole = ModelPool(actors=2, num_gpus=0.0, batch_size=8, cpus_per_actor=1.0, decode_cpus=1.0)
            half = ModelPool(
                actors=2, num_gpus=0.0, batch_size=8, cpus_per_actor=0.5, decode_cpus=args.decode_cpus
            )
            want = None
            for round_ in range(args.rounds):
                for kill in (False, True):
                    markers = tmp / f"loads-{round_}-{int(kill)}"
                    markers.mkdir()
                    embed = ModelStage(
                        ["text"], partial(model_loads.load_embedder, str(markers)), model_loads.embed
                    )
                    run_model_stage(engine, folder, embed, whole)
                    infer = (
                        partial(model_loads.classify_dying_once, str(markers))
                        if kill
                        else model_loads.classify
                    )
                    stage = ModelStage(
                        ["text", "key"],
                        partial(model_loads.load_classifier, str(markers), str(model)),
                        infer,
                        decode=model_loads.first_words,
                    )
                    started = time.perf_counter()
                    scratch = tmp / "scratch"
                    run = run_pooled(engine, folder, stage, half, model_loads.scores_of_slice, scratch)
                    wall = time.perf_counter() - started
                    scores = [
                        s for part in sorted(run.parts, key=lambda q: q["index"]) for s in part["scores"]
                    ]
                    want = scores if want is None else want
                    shape = run.describe()
                    row = {"round": round_, "killed": kill, "wall_s": round(wall, 2), "same": scores == want}
                    row.update({k: shape.get(k, "–") for k in SHAPE_KEYS})
                    rows.append(row)
                    print(row, flush=True)
                    if wall > args.timeout:
                        raise SystemExit(f"a run took {wall:.1f} s: hung")
        finally:
            ray.shutdown()
            cluster.stop()
            shutil.rmtree(tmp / "scratch", ignore_errors=True)
    print(f"load after {Path('/proc/loadavg').read_text().strip()}")
    print("\n| run | wall s (rounds) | median s | " + " | ".join(SHAPE_KEYS) + " | same |")
    print("|---|---|---:|" + "---:|" * len(SHAPE_KEYS) + "---|")
    for kill in (False, True):
        mine = [r for r in rows if r["killed"] == kill]
        walls = [r["wall_s"] for r in mine]
        shapes = [" / ".join(str(r[k]) for r in mine) for k in SHAPE_KEYS]
        label = "an actor killed mid-slice" if kill else "no actor killed"
        print(
            f"| {label} | {', '.join(map(str, walls))} | {statistics.median(walls):.2f} | "
            + " | ".join(shapes)
            + f" | {'yes' if all(r['same'] for r in mine) else 'NO'} |"
        )


if __name__ == "__main__":
    main()
