"""The image–text stages, one spec each (one ``image_text_source`` partition per source).

Rows carry the image bytes (see refinery/multimodal/schema.py for why); ``caption`` is the text
column of the checks.
"""

from __future__ import annotations

from refinery import names
from refinery.kernel.pipeline import chain
from refinery.kernel.spec import StageSpec
from refinery.multimodal.clip_score import (
    COSINE_EDGES,
    RANK_FIELDS,
    SCORE_FIELDS,
    ClipFilterParams,
    ClipScoreParams,
)
from refinery.multimodal.image_text_check import CHECK_FIELDS, ImageTextCheckParams
from refinery.multimodal.image_text_reader import ImageTextIngestParams
from refinery.multimodal.schema import CAPTION_COLUMN

RAW_IMAGE_TEXT = StageSpec(
    name=names.RAW_IMAGE_TEXT,
    kind="image_text",
    params=ImageTextIngestParams,
    text_column=CAPTION_COLUMN,
    score_columns=("image_file", "width", "height"),
    description="Image–caption pairs from $REFINERY_HOME/inbox/image_text/<source>/: captions tables "
    "(JSONL/CSV/TSV/Parquet with image path, caption, optional id and url) and WebDataset .tar shards "
    "(key.jpg + key.txt/key.json). Images are decoded once and stored as their original bytes in the rows. "
    "Unreadable, truncated, empty and oversized images, missing captions or images, malformed records and "
    "corrupt shards are quarantined in storage/rejected/raw_image_text with reason and raw bytes.",
)

IMAGE_TEXT_CHECKED = StageSpec(
    name=names.IMAGE_TEXT_CHECKED,
    kind="image_text",
    params=ImageTextCheckParams,
    fields=tuple(CHECK_FIELDS),
    histograms={
        "caption_words": (2, 3, 5, 8, 12, 20, 40, 80, 120),
        "aspect_ratio": (1.0, 1.25, 1.5, 2.0, 3.0, 5.0),
    },
    score_columns=("caption_words", "aspect_ratio", "pixel_std"),
    text_column=CAPTION_COLUMN,
    batch_rows=256,
    parallel=True,
    description="Single-modality rules before any model: the image decodes to RGB, its shortest side, aspect "
    "ratio and blankness; the caption is cleaned like text (ftfy, NFC, invisible characters, PII) and "
    "checked for placeholders, file names, URLs, word count, Gopher's shape rules with caption thresholds, "
    "repetition and the English gate. The first failure names the rejection; the scores are columns.",
)

CLIP_SCORED = StageSpec(
    name=names.CLIP_SCORED,
    kind="image_text",
    params=ClipScoreParams,
    fields=tuple(SCORE_FIELDS),
    histograms={"clip_cosine": tuple(COSINE_EDGES)},
    score_columns=("clip_cosine", "clip_score"),
    text_column=CAPTION_COLUMN,
    kinds=frozenset({"pytorch"}),
    description="CLIP score per pair (the clip resource): clip_cosine, the cosine similarity of the "
    "L2-normalised image and caption embeddings, and clip_score = 2.5·max(cos, 0) (CLIPScore). Images are "
    "decoded in DataLoader workers straight from the upstream file; both towers run batched on the compute "
    "device. Metadata: the score histogram and a contact sheet of the highest and lowest pairs.",
)

CLIP_FILTERED = StageSpec(
    name=names.CLIP_FILTERED,
    kind="image_text",
    params=ClipFilterParams,
    fields=tuple(RANK_FIELDS),
    histograms={"clip_cosine": tuple(COSINE_EDGES)},
    score_columns=("clip_cosine", "clip_rank"),
    text_column=CAPTION_COLUMN,
    parallel=True,
    description="Pairs kept by CLIP score: cosine ≥ threshold (by default the scoring model's calibrated cut "
    "where it has one, as the bundled tiny CLIP does, else 0.28, LAION-5B's for ViT-B-32: models differ in "
    "scale) or the top_fraction of the partition (DataComp's CLIP-score "
    "filter; clip_rank gives the order, ties broken by id). Metadata: the score histogram of what is kept "
    "and a contact sheet of the weakest pairs kept and the best pairs removed.",
)

# The image–text pipeline, in order (refinery.kernel.pipeline).
STAGES = chain(RAW_IMAGE_TEXT, IMAGE_TEXT_CHECKED, CLIP_SCORED, CLIP_FILTERED)
