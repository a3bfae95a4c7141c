"""raw_image_text → image_text_checked → clip_scored → clip_filtered: image–text pairs per source.

Rows carry the image bytes (see refinery/multimodal/schema.py for why), ``caption`` is the text
column of the checks. clip_scored and clip_filtered's CLIP work runs in the ``gpu`` pool with
the Kubernetes GPU request; on a machine without a GPU it runs on the CPU (compute ``device:
auto``).
"""

import dagster as dg
import numpy as np

from assets.gpu import gpu_asset_kwargs
from assets.metadata import counts_table, inbox_metadata, materialize_stage, provenance, stage_family
from assets.partitions import image_text_source
from refinery.batch import Histogram
from refinery.ingest.stage import ingest_with_reader
from refinery.multimodal.clip_score import (
    COSINE_EDGES,
    RANK_FIELDS,
    SCORE_FIELDS,
    ClipFilterParams,
    ClipScoreParams,
    FilterProcess,
    ScoreAttacher,
    plan_filter,
    resolve_threshold,
    score_file,
)
from refinery.multimodal.image_text_check import CHECK_FIELDS, ImageTextCheckParams, check_batch
from refinery.multimodal.image_text_reader import ImageTextIngestParams, ImageTextReader
from refinery.multimodal.preview import contact_sheet, markdown_image
from refinery.multimodal.schema import CAPTION_COLUMN
from refinery.stage import run_stage
from resources import RefineryHome
from resources.clip import ClipResource

INBOX_KIND = "image_text"
GROUP = "image_text"
RAW, CHECKED, SCORED, FILTERED = "raw_image_text", "image_text_checked", "clip_scored", "clip_filtered"


stage = stage_family(image_text_source, GROUP, text_column=CAPTION_COLUMN)


class ImageTextIngestConfig(dg.Config, ImageTextIngestParams):
    pass


class ImageTextCheckConfig(dg.Config, ImageTextCheckParams):
    pass


class ClipScoreConfig(dg.Config, ClipScoreParams):
    pass


class ClipFilterConfig(dg.Config, ClipFilterParams):
    pass


@stage(
    RAW,
    description="Image–caption pairs from $REFINERY_HOME/inbox/image_text/<source>/: captions tables "
    "(JSONL/CSV/TSV/Parquet with image path, caption, optional id and url) and WebDataset .tar shards "
    "(key.jpg + key.txt/key.json). Images are decoded once and stored as their original bytes in the rows. "
    "Unreadable, truncated, empty and oversized images, missing captions or images, malformed records and "
    "corrupt shards are quarantined in storage/rejected/raw_image_text with reason and raw bytes.",
)
def raw_image_text(context: dg.AssetExecutionContext, config: ImageTextIngestConfig, refinery: RefineryHome):
    source = context.partition_key
    layout, storage = refinery.layout(), refinery.storage()
    params = ImageTextIngestParams(**config.model_dump())
    folder = layout.inbox_source(INBOX_KIND, source)
    reader = ImageTextReader(folder, source, params)
    run = ingest_with_reader(reader, storage, RAW, provenance(RAW, source, params))
    run.stats.extra["image_formats"] = dict(reader.formats)
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=run.stats.rows_in,
        params=params,
        score_columns=["image_file", "width", "height"],
        extra={
            **inbox_metadata(context, run, folder),
            "image_formats": counts_table(reader.formats),
        },
        text_column=CAPTION_COLUMN,
    )


@stage(
    CHECKED,
    deps=[raw_image_text],
    description="Single-modality rules before any model: the image decodes to RGB, its shortest side, aspect "
    "ratio and blankness; the caption is cleaned like text (ftfy, NFC, invisible characters, PII) and "
    "checked for placeholders, file names, URLs, word count, Gopher's shape rules with caption thresholds, "
    "repetition and the English gate. The first failure names the rejection; the scores are columns.",
)
def image_text_checked(
    context: dg.AssetExecutionContext, config: ImageTextCheckConfig, refinery: RefineryHome
):
    source = context.partition_key
    storage = refinery.storage()
    params = ImageTextCheckParams(**config.model_dump())
    run = run_stage(
        storage,
        RAW,
        CHECKED,
        source,
        lambda batch: check_batch(batch, params),
        CHECK_FIELDS,
        provenance(CHECKED, source, params),
        histograms={
            "caption_words": Histogram([2, 3, 5, 8, 12, 20, 40, 80, 120]),
            "aspect_ratio": Histogram([1.0, 1.25, 1.5, 2.0, 3.0, 5.0]),
        },
        batch_rows=256,
        text_column=CAPTION_COLUMN,
    )
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=storage.row_count(RAW, source),
        params=params,
        score_columns=["caption_words", "aspect_ratio", "pixel_std"],
        text_column=CAPTION_COLUMN,
    )


def _model_metadata(model, workers: int) -> dict:
    return {
        "model": model.name,
        "weights": dg.MetadataValue.path(model.weights),
        "device": model.device,
        "fp16": model.half,
        "batch_size": model.batch_size,
        "dataloader_workers": workers,
    }


def _sheet(title_rows: list[tuple[str, list]], alt: str) -> dg.MetadataValue:
    if not any(entries for _, entries in title_rows):
        return dg.MetadataValue.md("_no pairs_")
    return dg.MetadataValue.md(markdown_image(contact_sheet(title_rows), alt))


@stage(
    SCORED,
    kinds={"pytorch"},
    deps=[image_text_checked],
    description="CLIP score per pair (the clip resource): clip_cosine, the cosine similarity of the "
    "L2-normalised image and caption embeddings, and clip_score = 2.5·max(cos, 0) (CLIPScore). Images are "
    "decoded in DataLoader workers straight from the upstream file; both towers run batched on the compute "
    "device. Metadata: the score histogram and a contact sheet of the highest and lowest pairs.",
    **gpu_asset_kwargs(),
)
def clip_scored(
    context: dg.AssetExecutionContext, config: ClipScoreConfig, refinery: RefineryHome, clip: ClipResource
):
    source = context.partition_key
    storage = refinery.storage()
    params = ClipScoreParams(**config.model_dump())
    model = clip.load()
    workers = clip.dataloader_workers()
    scores = score_file(storage.require(CHECKED, source), model, workers)
    attach = ScoreAttacher(scores, params.contact_sheet_pairs)
    stamp = provenance(SCORED, source, params)
    stamp["clip_model"] = model.name
    stamp["clip_threshold"] = model.threshold
    run = run_stage(
        storage,
        CHECKED,
        SCORED,
        source,
        attach,
        SCORE_FIELDS,
        stamp,
        histograms={"clip_cosine": Histogram(COSINE_EDGES)},
        batch_rows=params.batch_rows,
        text_column=CAPTION_COLUMN,
    )
    finite = scores.cosine[np.isfinite(scores.cosine)]
    context.log.info(
        f"{SCORED}[{source}]: {len(scores.cosine)} pairs in {scores.seconds:.2f}s "
        f"({scores.pairs_per_second:.1f} pairs/s, {scores.encode_seconds:.2f}s in CLIP) on {model.device}"
    )
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=storage.row_count(CHECKED, source),
        params=params,
        score_columns=["clip_cosine", "clip_score"],
        extra={
            **_model_metadata(model, workers),
            "pairs_per_second": round(scores.pairs_per_second, 1),
            "model_seconds": round(scores.encode_seconds, 3),
            "mean_cosine": round(float(finite.mean()), 4) if len(finite) else 0.0,
            "contact_sheet": _sheet(
                [
                    ("highest CLIP cosine", attach.extremes.highest()),
                    ("lowest CLIP cosine", attach.extremes.lowest()),
                ],
                "highest and lowest scored pairs",
            ),
        },
        text_column=CAPTION_COLUMN,
    )


@stage(
    FILTERED,
    deps=[clip_scored],
    description="Pairs kept by CLIP score: cosine ≥ threshold (by default the scoring model's calibrated cut "
    "where it has one, as the bundled tiny CLIP does, else 0.28, LAION-5B's for ViT-B-32: models differ in "
    "scale) or the top_fraction of the partition (DataComp's CLIP-score "
    "filter; clip_rank gives the order, ties broken by id). Metadata: the score histogram of what is kept "
    "and a contact sheet of the weakest pairs kept and the best pairs removed.",
)
def clip_filtered(context: dg.AssetExecutionContext, config: ClipFilterConfig, refinery: RefineryHome):
    source = context.partition_key
    storage = refinery.storage()
    params = ClipFilterParams(**config.model_dump())
    scored = storage.provenance(SCORED, source)
    threshold = resolve_threshold(params, scored.get("clip_threshold"))
    plan = plan_filter(storage.require(SCORED, source), params, threshold)
    process = FilterProcess(plan, params.contact_sheet_pairs)
    run = run_stage(
        storage,
        SCORED,
        FILTERED,
        source,
        process,
        RANK_FIELDS,
        provenance(FILTERED, source, params),
        histograms={"clip_cosine": Histogram(COSINE_EDGES)},
        batch_rows=params.batch_rows,
        text_column=CAPTION_COLUMN,
    )
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=storage.row_count(SCORED, source),
        params=params,
        score_columns=["clip_cosine", "clip_rank"],
        extra={
            "mode": plan.mode,
            "cosine_cutoff": (
                round(plan.cutoff, 4) if np.isfinite(plan.cutoff) else dg.MetadataValue.text("nothing kept")
            ),
            "clip_model": scored.get("clip_model", "unknown"),
            "contact_sheet": _sheet(
                [
                    ("weakest pairs kept", process.kept.lowest()),
                    ("best pairs removed", process.removed.highest()),
                ],
                "pairs on both sides of the cut",
            ),
        },
        text_column=CAPTION_COLUMN,
    )
