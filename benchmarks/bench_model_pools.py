"""Model stages on Ray actor pools against the in-process stage, same inputs, same run.

For each model stage — ``document_embeddings`` (MiniLM, ONNX int8 on CPU), ``quality_scored``
(the fastText-like classifier) and ``clip_scored`` (the bundled tiny CLIP) — the partition is
processed:

- ``in-process``: the stage's local path (the model loaded once in this process), the baseline;
- ``ray 1 actor`` / ``ray 2 actors``: the stage's Ray path (refinery.engine.model_pool): decode
  tasks, a pool of model actors (each loads the model: that load is inside the timing, as it is
  in every run of the stage), per-slice write tasks, on a Ray cluster started in this process.

Text stages read the real corpus (benchmarks/real_corpus.py: Debian docs, man pages, CPython
docs); CLIP reads the generated image-text sample. Outputs are checked equal to the baseline's
(vectors and cosines within 1e-5, identical keep/remove decisions) before a figure is reported.
Wall seconds per run; the machine's load average is printed with them (a shared machine's figures
move with it).

    .venv/bin/python -m benchmarks.bench_model_pools --docs 600 --pairs 96
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

for _flag in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_flag, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks.bench_embeddings import real_texts  # noqa: E402
from refinery import names  # noqa: E402
from refinery.paths import Layout  # noqa: E402
from refinery.storage import Storage  # noqa: E402

SOURCE = "bench"


def write_upstream(layout: Layout, asset: str, frame: pd.DataFrame, row_group: int) -> None:
    target = Storage(layout.storage).path(asset, SOURCE)
    target.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.cast(
        pa.schema([pa.field(f.name, pa.string()) if f.type == pa.large_string() else f for f in table.schema])
    )
    pq.write_table(table, target, row_group_size=row_group)


def context(layout: Layout, spec, params, engine, resources: dict):
    from refinery.kernel.spec import StageContext, StageResources

    return StageContext(
        spec=spec,
        source=SOURCE,
        params=params,
        layout=layout,
        storage=Storage(layout.storage),
        engine=engine,
        resources=StageResources(resources),
    )


def run_embeddings(layout: Layout, engine, compute) -> tuple[float, np.ndarray]:
    from refinery.models.embedder import EmbedderLoader
    from refinery.quality.embeddings import (
        EmbeddingParams,
        read_embeddings,
        write_embeddings,
        write_embeddings_pooled,
    )

    storage, loader = Storage(layout.storage), EmbedderLoader(compute=compute)
    started = time.perf_counter()
    if engine.distributed:
        write_embeddings_pooled(
            storage,
            names.QUALITY_SCORED,
            SOURCE,
            loader.load,
            {},
            EmbeddingParams(),
            engine,
            compute.model_pool(),
        )
    else:
        write_embeddings(storage, names.QUALITY_SCORED, SOURCE, loader.load(), {}, EmbeddingParams())
    return time.perf_counter() - started, read_embeddings(storage, SOURCE).vectors


def run_row_stage(layout: Layout, engine, spec, params, make, plan, resources) -> tuple[float, pd.DataFrame]:
    from refinery.engine.model_stages import execute_model_stage

    started = time.perf_counter()
    execute_model_stage(context(layout, spec, params, engine, resources), make, plan=plan)
    seconds = time.perf_counter() - started
    storage = Storage(layout.storage)
    kept, rejected = storage.read(spec.name, SOURCE), storage.read(spec.name, SOURCE, rejected=True)
    return seconds, pd.concat([kept.assign(kept=True), rejected.assign(kept=False)]).sort_values("id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--pairs", type=int, default=96)
    parser.add_argument("--corpus-mb", type=float, default=2, help="size cap of the real corpus read")
    parser.add_argument("--slice-rows", type=int, default=100)
    parser.add_argument("--ray-cpus", type=int, default=4, help="logical CPUs of the in-process Ray cluster")
    args = parser.parse_args()

    import ray

    from assets.multimodal import _clip_pool, _clip_scores
    from assets.text_stages import _quality, _quality_pool
    from refinery.engine.local import LocalEngine
    from refinery.engine.ray_engine import RayEngine
    from refinery.models.device import Compute
    from refinery.multimodal.clip_model import ClipLoader
    from refinery.multimodal.clip_score import ClipScoreParams
    from refinery.quality.classifier import (
        ClassifierTrainParams,
        QualityModelLoader,
        QualityParams,
        save_classifier,
        train_classifier,
    )
    from refinery.sample import prose
    from refinery.sample.multimodal_sample import build_image_text_sample
    from refinery.stages import image_text, text

    work = Path(tempfile.mkdtemp(prefix="bench-model-pools-"))
    try:
        ids, texts = real_texts(args.docs, args.corpus_mb)
        frame = pd.DataFrame({"id": ids, "text": texts})
        rng = random.Random(3)
        negatives = [(f"junk/{i}", prose.keyword_spam(rng)) for i in range(200)]
        positives = [(f"ref/{i}", t) for i, t in enumerate(texts[:200])]
        model = work / "classifier.safetensors"
        save_classifier(train_classifier(positives, negatives, ClassifierTrainParams(buckets=1 << 16)), model)

        sample = Layout.at(work / "sample")
        build_image_text_sample(sample.inbox_kind("image_text"), seed=5, pairs=args.pairs)
        pairs = image_pairs(sample, args.pairs)

        engine_local = LocalEngine()
        ray_engine = RayEngine(address="local", num_cpus=args.ray_cpus, slice_rows=args.slice_rows)
        ray_engine.connect()
        rows = []
        for label, actors in (("in-process", 0), ("ray 1 actor", 1), ("ray 2 actors", 2)):
            engine = engine_local if actors == 0 else ray_engine
            compute = Compute(device="cpu", batch_size=64, ray_actors=max(1, actors), ray_decode_cpus=0.5)
            home = Layout.at(work / label.replace(" ", "-"))
            write_upstream(home, names.QUALITY_SCORED, frame, 50)
            write_upstream(home, names.PERPLEXITY_SCORED, frame, 50)
            write_upstream(home, names.IMAGE_TEXT_CHECKED, pairs, 16)
            load = os.getloadavg()[0]
            seconds, vectors = run_embeddings(home, engine, compute)
            rows.append(("document_embeddings", label, len(frame), seconds, vectors, load))
            load = os.getloadavg()[0]
            seconds, scored = run_row_stage(
                home, engine, text.QUALITY_SCORED, QualityParams(threshold=0.5), _quality, _quality_pool,
                {"quality_model": QualityModelLoader(str(model)), "compute": compute},
            )  # fmt: skip
            rows.append(("quality_scored", label, len(frame), seconds, scored, load))
            load = os.getloadavg()[0]
            seconds, scored = run_row_stage(
                home, engine, image_text.CLIP_SCORED, ClipScoreParams(), _clip_scores, _clip_pool,
                {"clip": ClipLoader(compute=compute)},
            )  # fmt: skip
            rows.append(("clip_scored", label, len(pairs), seconds, scored, load))
        ray.shutdown()
        report(rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def image_pairs(sample: Layout, pairs: int) -> pd.DataFrame:
    """The image-text sample through raw_image_text and image_text_checked, one source's rows."""
    import dagster as dg

    from assets.multimodal import image_text_checked, raw_image_text
    from resources import build_resources

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("image_text_source", ["shapes"])
        dg.materialize(
            [raw_image_text, image_text_checked],
            partition_key="shapes",
            instance=instance,
            resources=build_resources("local", home=str(sample.home), device="cpu"),
        )
    return Storage(sample.storage).read(names.IMAGE_TEXT_CHECKED, "shapes")


def report(rows: list) -> None:
    baseline = {stage: (seconds, out) for stage, label, _, seconds, out, _ in rows if label == "in-process"}
    print("| stage | run | rows | seconds | rows/s | vs in-process | load avg (1 min) |")
    print("|---|---|---|---|---|---|---|")
    for stage, label, n, seconds, out, load in rows:
        base_seconds, base = baseline[stage]
        check(stage, out, base)
        print(
            f"| {stage} | {label} | {n} | {seconds:.2f} | {n / seconds:.1f} | "
            f"{base_seconds / seconds:.2f}× | {load:.2f} |"
        )


def check(stage: str, got, want) -> None:
    """The pool's outputs must be the in-process stage's before a figure counts."""
    if isinstance(got, np.ndarray):
        np.testing.assert_allclose(got, want, atol=1e-5)
        return
    assert got["id"].tolist() == want["id"].tolist(), stage
    assert got["kept"].tolist() == want["kept"].tolist(), stage
    column = "quality_score" if "quality_score" in got else "clip_cosine"
    np.testing.assert_allclose(got[column].astype(float), want[column].astype(float), atol=1e-5)


if __name__ == "__main__":
    main()
