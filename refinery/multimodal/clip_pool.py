"""clip_scored on a Ray actor pool (refinery.engine.model_stages): decode tasks, CLIP actors, and
per-slice tasks that attach the scores and write the parts.

- **decode** (CPU tasks): each row's image bytes decoded and preprocessed with the model's
  transform, built from its configuration (:func:`clip_model.clip_transform`) without loading the
  weights; a row whose image does not decode carries its error instead of pixels.
- **infer** (the actors, ``compute.num_gpus`` GPUs each): both towers on a batch, the cosine per
  row (NaN with the error where the image failed), exactly as :func:`clip_score.score_file`.
- **attach** (CPU tasks): :class:`clip_score.ScoreAttacher` over the slice's scores; its highest
  and lowest pairs and its counts go back to the driver, which reports them for the partition.

The driver resolves the weights' files (the model's name, its calibrated threshold, whether it is
the tiny CLIP) and, for the tiny CLIP only, counts the captions of its generator's grammar (the
caption column only) for the out-of-domain warning: it never loads the model or an image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from refinery.kernel.processor import StageProcessor
from refinery.metadata import FilePath
from refinery.multimodal.clip_model import ClipLoader, ClipModel, clip_transform
from refinery.multimodal.clip_score import ScoreAttacher, ScorePass
from refinery.multimodal.images import decode_rgb
from refinery.multimodal.preview import Extremes, sheet_markdown


def decode_images(source, frame: pd.DataFrame) -> pd.DataFrame:
    """The CPU step: every row's image preprocessed (pixels flattened), or its decode error."""
    transform, size = clip_transform(source)
    pixels, errors = [], []
    for data in frame["image"].tolist():
        try:
            pixels.append(np.asarray(transform(decode_rgb(data)), dtype=np.float32).reshape(-1))
            errors.append("")
        except Exception as err:  # reported per row by the stage, never fails the batch
            pixels.append(np.zeros(3 * size * size, dtype=np.float32))
            errors.append(f"{type(err).__name__}: {err}")
    return pd.DataFrame({"pixels": pixels, "error": errors, "caption": frame["caption"].tolist()})


def load_clip_model(loader: ClipLoader) -> ClipModel:
    return loader.load()


def score_pairs(clip: ClipModel, frame: pd.DataFrame) -> pd.DataFrame:
    """An actor's work on one batch: the cosine of each row's image and caption embeddings."""
    import torch

    flat = np.stack([np.asarray(p, dtype=np.float32) for p in frame["pixels"]])
    pixels = torch.from_numpy(flat.reshape(len(frame), 3, clip.image_size, clip.image_size))
    image_emb = clip.encode_pixels(pixels)
    text_emb = clip.encode_tokens(clip.tokenize(frame["caption"].tolist()))
    cosine = (image_emb * text_emb).sum(axis=1).astype(np.float32)
    errors = frame["error"].astype(str).to_numpy()
    cosine[errors != ""] = np.nan
    return pd.DataFrame({"clip_cosine": cosine, "error": errors})


def describe_clip(clip: ClipModel) -> dict:
    """The model as its actor saw it (the report's model fields)."""
    return {
        "model": clip.name,
        "weights": str(clip.weights),
        "device": clip.device,
        "fp16": clip.half,
        "batch_size": clip.batch_size,
    }


class SliceScores(ScoreAttacher):
    """ScoreAttacher over one slice; its summary carries what the driver reports for the partition."""

    def summary(self) -> dict:
        finite = self.scores.cosine[np.isfinite(self.scores.cosine)]
        ends = {e.row_id: e for e in [*self.extremes.highest(), *self.extremes.lowest()]}
        return {
            "cosine_sum": float(finite.sum()),
            "scored": len(finite),
            "extremes": [(e.score, e.row_id, e.caption, e.image) for e in ends.values()],
        }


def attach_slice(sheet_pairs: int, outputs: pa.Table | None, model: dict) -> SliceScores:
    """The per-slice processor: the actors' scores attached in row order."""
    if outputs is None:
        return SliceScores(ScorePass(np.zeros(0, dtype=np.float32)), sheet_pairs)
    cosine = outputs.column("clip_cosine").to_numpy(zero_copy_only=False).astype(np.float32)
    errors = {i: e for i, e in enumerate(outputs.column("error").to_pylist()) if e}
    return SliceScores(ScorePass(cosine, errors), sheet_pairs)


@dataclass
class PoolReport(StageProcessor):
    """The driver's report of clip_scored on a pool: the slices' counts and extremes absorbed."""

    sheet_pairs: int
    info: dict  # domain info (the driver's)
    model: dict = field(default_factory=dict)  # the actors' description
    seconds: float = 0.0
    cosine_sum: float = 0.0
    scored: int = 0

    def __post_init__(self) -> None:
        self.extremes = Extremes(self.sheet_pairs)

    def absorb(self, delta) -> None:
        self.cosine_sum += delta.get("cosine_sum", 0.0)
        self.scored += int(delta.get("scored", 0))
        for score, row_id, caption, image in delta.get("extremes", []):
            self.extremes.add(score, row_id, caption, image)

    def report(self) -> dict:
        model = dict(self.model)
        if "weights" in model:
            model["weights"] = FilePath(model["weights"])
        return {
            **model,
            **self.info,
            "mean_cosine": round(self.cosine_sum / self.scored, 4) if self.scored else 0.0,
            "contact_sheet": sheet_markdown(
                [
                    ("highest CLIP cosine", self.extremes.highest()),
                    ("lowest CLIP cosine", self.extremes.lowest()),
                ],
                "highest and lowest scored pairs",
            ),
        }
