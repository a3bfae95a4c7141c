"""Single-modality checks of image–text pairs, before any model looks at them.

CLIP scores say whether a caption fits its image, not whether either is usable: a 20-pixel
icon, a 10:1 banner, a blank frame or a caption that is a file name can still score. These rules
run first, image then caption, and the first failure names the rejection:

- **image**: decodes to RGB (``image.decode_failed``), shortest side (``image.too_small``),
  aspect ratio (``image.aspect_ratio``, LAION/DataComp keep ≤ 3), blank or nearly uniform pixels
  (``image.blank``).
- **caption**: cleaned with the text pipeline's cleaning (ftfy, NFC, invisible characters,
  whitespace, PII redaction), then placeholders and file names (``caption.placeholder``,
  ``caption.file_name``), bare URLs (``caption.url``), word count (``caption.too_few_words``,
  ``caption.too_many_words``), Gopher's shape rules with caption thresholds (word length, symbols,
  ellipses, alphabetic words: ``caption.<rule>``), repetition (``caption.repetitive``) and,
  for captions of ten words or more, the text pipeline's English gate (``caption.not_english``).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image
from pydantic import BaseModel, Field

from refinery.batch import BatchResult, split_batch
from refinery.clean.cleaning import CleanParams, clean_text
from refinery.clean.pii import PII_KINDS
from refinery.filters.gopher_quality import gopher_quality
from refinery.filters.language import english_word_fraction
from refinery.filters.params import HeuristicParams
from refinery.multimodal.images import decode_rgb
from refinery.text.words import tokens, words

CHECK_FIELDS = [
    pa.field("caption_words", pa.int32()),
    pa.field("english_word_fraction", pa.float32()),
    pa.field("aspect_ratio", pa.float32()),  # long side / short side
    pa.field("pixel_std", pa.float32()),  # largest per-channel standard deviation, 0–255
    pa.field("caption_changed", pa.bool_()),
]
PLACEHOLDERS = frozenset(
    [
        "image", "photo", "picture", "img", "untitled", "none", "null", "nan", "n/a", "na", "no caption",
        "no description", "placeholder", "default", "thumbnail", "screenshot", "stock photo",
        "image not found", "click to enlarge", "no image", "caption",
    ]
)  # fmt: skip
_FILE_NAME = re.compile(
    r"^\S+\.(?:jpe?g|png|gif|webp|bmp|tiff?|heic)$|^(?:img|dsc|dcim|pxl|photo)[_-]?\d+", re.I
)
_URL = re.compile(r"^(?:https?://|www\.)\S+$", re.I)


class ImageTextCheckParams(BaseModel):
    """Thresholds of the single-modality rules; ``None`` switches a rule off."""

    min_side: int | None = Field(64, description="Shortest image side in pixels.")
    max_aspect_ratio: float | None = Field(3.0, description="Long side / short side (LAION, DataComp: 3).")
    min_pixel_std: float | None = Field(
        2.0, description="Below this deviation (largest of the R, G, B channels) an image is blank."
    )
    min_caption_words: int | None = Field(2, description="Fewer words: rejected (single tags say little).")
    max_caption_words: int | None = Field(
        120, description="More words: rejected (CLIP reads at most 77 tokens; long texts are not captions)."
    )
    min_avg_word_length: float | None = Field(2.0, description="Gopher's rule with a caption threshold.")
    max_avg_word_length: float | None = Field(12.0, description="Gopher's rule with a caption threshold.")
    max_symbol_ratio: float | None = Field(0.1, description="'#' and ellipses per token (Gopher).")
    min_alpha_words_ratio: float | None = Field(
        0.6, description="Tokens with a letter / all tokens (Gopher: 0.8)."
    )
    max_repeated_word_ratio: float | None = Field(
        0.5, description="1 - distinct/total words, for captions of five words or more."
    )
    min_english_word_fraction: float | None = Field(
        0.05, description="The text pipeline's English gate (share of English function words)."
    )
    english_gate_min_words: int = Field(
        10,
        description="Shorter captions skip the gate: its function words ('the', 'of'…) are rare in them.",
    )
    fix_unicode: bool = Field(
        True, description="Repair mojibake in captions (the text pipeline's ftfy step)."
    )
    redact_pii: list[str] = Field(
        list(PII_KINDS), description=f"PII kinds redacted in captions, of {list(PII_KINDS)}."
    )

    def clean_params(self) -> CleanParams:
        """The text pipeline's cleaning, as applied to captions."""
        return CleanParams(fix_unicode=self.fix_unicode, redact=self.redact_pii)


def _gopher_params(p: ImageTextCheckParams) -> HeuristicParams:
    return HeuristicParams(
        min_doc_words=None,
        max_doc_words=None,
        min_avg_word_length=p.min_avg_word_length,
        max_avg_word_length=p.max_avg_word_length,
        max_hash_word_ratio=p.max_symbol_ratio,
        max_ellipsis_word_ratio=p.max_symbol_ratio,
        max_bullet_lines_ratio=None,
        max_ellipsis_lines_ratio=None,
        min_alpha_words_ratio=p.min_alpha_words_ratio,
    )


def check_image(data: bytes, p: ImageTextCheckParams) -> tuple[tuple[str, str] | None, float, float]:
    """(first failure or None, aspect ratio, pixel standard deviation)."""
    try:
        image = decode_rgb(data)
    except Exception as err:  # whatever PIL raises for a file ingest could open
        return ("image.decode_failed", f"{type(err).__name__}: {err}"), float("nan"), float("nan")
    short, long = sorted(image.size)
    aspect = long / short if short else float("inf")
    small = image.resize((64, 64), Image.Resampling.BILINEAR) if max(image.size) > 64 else image
    std = float(np.asarray(small, dtype=np.float32).reshape(-1, 3).std(axis=0).max())
    if p.min_side is not None and short < p.min_side:
        return (
            ("image.too_small", f"{image.width}×{image.height}: shortest side {short} < {p.min_side}"),
            aspect,
            std,
        )
    if p.max_aspect_ratio is not None and aspect > p.max_aspect_ratio:
        return ("image.aspect_ratio", f"{aspect:.2f} > {p.max_aspect_ratio}"), aspect, std
    if p.min_pixel_std is not None and std < p.min_pixel_std:
        return ("image.blank", f"pixel deviation {std:.2f} < {p.min_pixel_std}"), aspect, std
    return None, aspect, std


def check_caption(
    caption: str, p: ImageTextCheckParams, gopher: HeuristicParams
) -> tuple[tuple[str, str] | None, dict]:
    """(first failure or None, scores) of an already cleaned caption."""
    wrds = words(caption)
    scores: dict = {"caption_words": len(wrds)}
    flat = " ".join(caption.lower().split()).strip(" .!")
    if flat in PLACEHOLDERS:
        return ("caption.placeholder", f"{caption!r} is a placeholder"), scores
    if _URL.match(caption.strip()):
        return ("caption.url", "the caption is a URL"), scores
    if _FILE_NAME.search(caption.strip()):
        return ("caption.file_name", f"{caption[:80]!r} looks like a file name"), scores
    if p.min_caption_words is not None and len(wrds) < p.min_caption_words:
        return ("caption.too_few_words", f"{len(wrds)} words < {p.min_caption_words}"), scores
    if p.max_caption_words is not None and len(wrds) > p.max_caption_words:
        return ("caption.too_many_words", f"{len(wrds)} words > {p.max_caption_words}"), scores
    found = gopher_quality(caption, len(tokens(caption)), wrds, gopher, {})
    if found:
        return (found[0].replace("gopher_quality.", "caption."), found[1]), scores
    lowered = [w.lower() for w in wrds]
    if p.max_repeated_word_ratio is not None and len(lowered) >= 5:
        repeated = 1 - len(set(lowered)) / len(lowered)
        if repeated > p.max_repeated_word_ratio:
            return (
                "caption.repetitive",
                f"{repeated:.2f} of words repeat > {p.max_repeated_word_ratio}",
            ), scores
    fraction = english_word_fraction(wrds)
    scores["english_word_fraction"] = fraction
    if (
        p.min_english_word_fraction is not None
        and len(wrds) >= p.english_gate_min_words
        and fraction < p.min_english_word_fraction
    ):
        return (
            "caption.not_english",
            f"{fraction:.1%} English function words < {p.min_english_word_fraction:.0%} (rules assume 'en')",
        ), scores
    return None, scores


def check_batch(frame: pd.DataFrame, p: ImageTextCheckParams) -> BatchResult:
    gopher = _gopher_params(p)
    clean = p.clean_params()
    unknown = set(p.redact_pii) - set(PII_KINDS)
    if unknown:
        raise ValueError(f"unknown PII kinds {sorted(unknown)}; choose from {list(PII_KINDS)}")
    reasons, captions, changed = [], [], []
    columns: dict[str, list] = {
        "caption_words": [],
        "english_word_fraction": [],
        "aspect_ratio": [],
        "pixel_std": [],
    }
    for original, data in zip(frame["caption"].tolist(), frame["image"].tolist(), strict=True):
        verdict, aspect, std = check_image(data, p)
        caption, _ = clean_text(original, clean)
        caption_verdict, scores = (
            check_caption(caption, p, gopher)
            if caption.strip()
            else (
                ("caption.empty_after_cleaning", "no text left after cleaning"),
                {"caption_words": 0},
            )
        )
        reasons.append(verdict or caption_verdict)
        captions.append(caption if caption.strip() else original)
        changed.append(caption != original)
        columns["caption_words"].append(scores.get("caption_words"))
        columns["english_word_fraction"].append(scores.get("english_word_fraction", np.nan))
        columns["aspect_ratio"].append(aspect)
        columns["pixel_std"].append(std)
    out = frame.assign(caption=captions, caption_changed=changed, **columns)
    out["caption_words"] = out["caption_words"].astype("Int32")
    return split_batch(out, reasons)
