"""clip_filtered before and after its ranking moved to the workers: the step's peak memory, and
whether any decision, rank or reason changed.

Before (the code at ``--before``'s checkout), ``top_fraction`` read the partition's id and cosine
columns into the step, sorted them in Python and held an id → rank dict. After, the ranks come from
per-slice quantile sketches and a range shuffle (:mod:`refinery.multimodal.clip_rank`). Each run is a
fresh process running ``clip_filtered`` through Dagster's ``materialize`` on the local engine (the
step is the whole process), so its peak RSS is the step's; the growth is the peak minus the RSS
just before ``materialize`` (imports and Dagster's instance already paid).

    # build the inputs once (a generated partition; the bundled sample's clip_scored, tiny CLIP)
    .venv/bin/python -m benchmarks.bench_clip_filtered build --home /tmp/cf --rows 400000
    # one run (PYTHONPATH picks the code: a checkout of main for "before", this tree for "after")
    PYTHONPATH=/tmp/main-src .venv/bin/python -m benchmarks.bench_clip_filtered run --home /tmp/cf-before \\
        --mode top_fraction
    .venv/bin/python -m benchmarks.bench_clip_filtered compare /tmp/cf-before /tmp/cf-after
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import shutil
import time
from pathlib import Path

MODES = {"threshold": {"threshold": 0.3}, "top_fraction": {"mode": "top_fraction", "top_fraction": 0.3}}
SAME_METADATA = ("mode", "cosine_cutoff", "clip_model", "contact_sheet", "rows_in", "rows_out")


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1e6


def generated(rows: int, seed: int = 7):
    """clip_scored's output as clip_filtered reads it: small images, cosines with ties (3 decimals)."""
    import numpy as np
    import pyarrow as pa
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for i in range(16):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (i * 16, 90, 255 - i * 16)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    cosine = np.round(rng.normal(0.28, 0.12, rows), 3).astype(np.float32)
    ids = [f"pair-{i:09d}" for i in rng.permutation(rows)]
    pick = rng.integers(0, len(images), rows)
    return pa.table(
        {
            "id": ids,
            "caption": [f"a generated caption {i % 997}" for i in range(rows)],
            "image": pa.array([images[k] for k in pick], pa.binary()),
            "clip_cosine": cosine,
            "clip_score": (2.5 * np.maximum(cosine, 0)).astype(np.float32),
        }
    )


def build(home: Path, rows: int, sample: bool, partition: str = "generated") -> None:
    import pyarrow.parquet as pq

    from refinery.paths import Layout
    from refinery.storage import Storage

    layout = Layout.at(home)
    path = Storage(layout.storage).path("clip_scored", partition)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(generated(rows), path, row_group_size=5_000)
    if sample:  # the bundled sample through the real chain (the tiny CLIP scores it)
        import dagster as dg

        from assets.multimodal import clip_scored, image_text_checked, raw_image_text
        from refinery.sample.multimodal_sample import IMAGE_TEXT_SOURCES, build_image_text_sample
        from resources import build_resources

        build_image_text_sample(layout.inbox_kind("image_text"), seed=5, pairs=40)
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("image_text_source", list(IMAGE_TEXT_SOURCES))
            for source in IMAGE_TEXT_SOURCES:
                assert dg.materialize(
                    [raw_image_text, image_text_checked, clip_scored],
                    partition_key=source,
                    instance=instance,
                    resources=build_resources("local", home=str(home), device="cpu", batch_size=16),
                ).success
    print(json.dumps({"built": str(home), "partition": partition, "rows": rows, "sample": sample}))


def run(home: Path, mode: str, partition: str) -> dict:
    import dagster as dg

    from assets.multimodal import clip_filtered
    from resources import build_resources

    resources = build_resources("local", home=str(home), device="cpu", batch_size=16)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("image_text_source", [partition])
        before = rss_mb()
        started = time.perf_counter()
        result = dg.materialize(
            [clip_filtered],
            partition_key=partition,
            instance=instance,
            resources=resources,
            run_config={"ops": {"clip_filtered": {"config": MODES[mode]}}},
        )
        seconds = time.perf_counter() - started
    assert result.success
    meta = result.asset_materializations_for_node("clip_filtered")[0].metadata
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    out = {
        "partition": partition,
        "mode": mode,
        "seconds": round(seconds, 2),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1),
        "growth_mb": round(peak - before, 1),
    }
    keep = Path(home) / "bench-out" / f"{partition}-{mode}"
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    storage = Path(home) / "storage"
    for side in ("clip_filtered", "rejected/clip_filtered"):
        for found in (storage / side).glob(f"{partition}*"):
            target = keep / side.replace("/", "-")
            target.mkdir(exist_ok=True)
            (shutil.copytree if found.is_dir() else shutil.copy)(found, target / found.name)
    (keep / "metadata.json").write_text(json.dumps({k: str(v.value) for k, v in meta.items()}))
    print(json.dumps(out))
    return out


def compare(before: Path, after: Path) -> None:
    """Rows, order, columns, ranks and reasons of every run, and the report's values."""
    import pyarrow.parquet as pq

    for case in sorted(p.name for p in (before / "bench-out").iterdir()):
        a, b = before / "bench-out" / case, after / "bench-out" / case
        changed = 0
        for side in ("clip_filtered", "rejected-clip_filtered"):
            frames = [
                pq.read_table(next((x / side).iterdir())).to_pandas().drop(columns=["image"]) for x in (a, b)
            ]
            assert list(frames[0].columns) == list(frames[1].columns), case
            merged = frames[0].compare(frames[1]) if len(frames[0]) == len(frames[1]) else None
            changed += len(frames[0]) if merged is None else len(merged)
        meta = [json.loads((x / "metadata.json").read_text()) for x in (a, b)]
        differs = [k for k in SAME_METADATA if meta[0].get(k) != meta[1].get(k)]
        rows = sum(
            pq.read_metadata(next((a / s).iterdir())).num_rows
            for s in ("clip_filtered", "rejected-clip_filtered")
        )
        print(
            json.dumps({"case": case, "rows": rows, "rows_differing": changed, "metadata_differing": differs})
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--home", type=Path, required=True)
    b.add_argument("--rows", type=int, default=400_000)
    b.add_argument("--sample", action="store_true", help="also the bundled sample's clip_scored (tiny CLIP)")
    b.add_argument("--partition", default="generated")
    r = sub.add_parser("run")
    r.add_argument("--home", type=Path, required=True)
    r.add_argument("--mode", choices=sorted(MODES), required=True)
    r.add_argument("--partition", default="generated")
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = parser.parse_args()
    random.seed(0)
    if args.command == "build":
        build(args.home, args.rows, args.sample, args.partition)
    elif args.command == "run":
        run(args.home, args.mode, args.partition)
    else:
        compare(args.before, args.after)


if __name__ == "__main__":
    main()
