"""CLIP scores of image–text pairs, and keeping pairs by threshold or top fraction.

Scoring makes one pass over the upstream partition file before the stage writes anything:
DataLoader workers read the image bytes straight from the Parquet file (each caches the row
group it is in), decode and preprocess them, while the main process tokenizes the captions of
the same rows and runs both towers batch by batch. Workers start once per partition, not per
batch; only the score per row (two floats) stays in memory, so a partition of any size scores
in bounded memory. The stage then streams the file again and attaches the scores.

The score is the cosine similarity of the L2-normalised image and caption embeddings
(``clip_cosine``), plus the CLIPScore variant of Hessel et al. 2021, ``2.5 · max(cos, 0)``
(``clip_score``). ``clip_filtered`` keeps pairs with cosine ≥ ``threshold`` (0.28 by default,
LAION-5B's for ViT-B-32) or the ``top_fraction`` best of the partition (DataComp's CLIP-score
filtering). Thresholds depend on the model: a different CLIP has a different scale.
"""

from __future__ import annotations

import bisect
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, Field, model_validator

from refinery.batch import BatchResult, split_batch
from refinery.engine.slices import current_slice
from refinery.kernel.processor import StageProcessor
from refinery.metadata import Json, Markdown
from refinery.models.device import worker_context
from refinery.multimodal.clip_model import ClipModel, synthetic_domain_warning
from refinery.multimodal.clip_rank import RankPlan, SliceRanks
from refinery.multimodal.images import decode_rgb
from refinery.multimodal.preview import Extremes, sheet_markdown
from refinery.storage import iter_path_batches, parquet_files

SCORE_FIELDS = [pa.field("clip_cosine", pa.float32()), pa.field("clip_score", pa.float32())]
RANK_FIELDS = [pa.field("clip_rank", pa.int64())]  # 1 = best of the partition
COSINE_EDGES = [-0.2, -0.1, 0.0, 0.1, 0.2, 0.25, 0.28, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
CLIPSCORE_WEIGHT = 2.5


class ClipScoreParams(BaseModel):
    batch_rows: int = Field(512, description="Rows per batch written (each holds its images).")
    contact_sheet_pairs: int = Field(6, description="Highest and lowest pairs shown in the contact sheet.")


class ClipFilterParams(BaseModel):
    mode: Literal["threshold", "top_fraction"] = Field(
        "threshold", description="Keep by absolute cosine threshold, or the best fraction of the partition."
    )
    threshold: float | None = Field(
        None,
        description="Minimum cosine. Empty: the scoring model's calibrated cut where it has one (the bundled "
        "tiny CLIP's), else 0.28 (LAION-5B's, for ViT-B-32).",
    )
    top_fraction: float = Field(
        0.3, gt=0, le=1, description="Share of the partition kept in top_fraction mode."
    )
    batch_rows: int = Field(512, description="Rows per batch written (each holds its images).")
    contact_sheet_pairs: int = Field(6, description="Pairs shown on each side of the cut.")

    @model_validator(mode="after")
    def _check(self) -> ClipFilterParams:
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold} is a cosine: it must lie in [-1, 1]")
        return self


# -- the scoring pass ---------------------------------------------------------------------------
class ParquetImages:
    """Map-style dataset over the ``image`` column of a Parquet file: (pixels, ok, error, pid), the
    pid of the process that decoded the row (a DataLoader worker, or the step itself with 0 workers:
    what the stage reports as the decode processes it actually used).

    Each worker keeps the row group it last read, and the DataLoader hands consecutive batches
    to the workers in turn, so every row group is read by a few workers at most. Picklable (for
    ``spawn`` workers): it holds a path, row-group offsets and the preprocessing transform.
    """

    def __init__(self, path: Path, preprocess, image_size: int):
        self.preprocess = preprocess
        self.image_size = image_size
        self.groups: list[tuple[str, int]] = []  # (file, row group), in row order (either layout)
        self.offsets = [0]
        for file in parquet_files(Path(path)):
            metadata = pq.ParquetFile(file).metadata
            for i in range(metadata.num_row_groups):
                self.groups.append((str(file), i))
                self.offsets.append(self.offsets[-1] + metadata.row_group(i).num_rows)
        self._group: int | None = None
        self._images: list | None = None

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, index: int):
        import torch

        group = bisect.bisect_right(self.offsets, index) - 1
        if group != self._group:
            file, row_group = self.groups[group]
            table = pq.ParquetFile(file).read_row_group(row_group, columns=["image"])
            self._images, self._group = table.column("image").to_pylist(), group
        data = self._images[index - self.offsets[group]]
        try:
            return self.preprocess(decode_rgb(data)), True, "", os.getpid()
        except Exception as err:  # reported per row by the stage, never fails the batch
            blank = torch.zeros(3, self.image_size, self.image_size)
            return blank, False, f"{type(err).__name__}: {err}", os.getpid()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_group": None, "_images": None}


@dataclass
class ScorePass:
    cosine: np.ndarray  # float32 per row of the file, NaN where the image failed
    errors: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    encode_seconds: float = 0.0
    workers: int = 0  # DataLoader workers asked for (dataloader_workers, at most one per batch)
    decode_processes: int = 0  # worker processes that decoded rows (0: the step's own process)

    @property
    def pairs_per_second(self) -> float:
        return len(self.cosine) / self.seconds if self.seconds > 0 else 0.0


def dataloader(dataset, batch_size: int, workers: int, device: str):
    """Workers come from a forkserver on CPU and spawn with CUDA (see ``worker_context``)."""
    from torch.utils.data import DataLoader

    kwargs: dict = {}
    if workers > 0:
        kwargs["multiprocessing_context"] = worker_context(device, ["open_clip", __name__])
        kwargs["prefetch_factor"] = 4
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.startswith("cuda"),
        **kwargs,
    )


def score_file(path: Path, clip: ClipModel, workers: int, text_column: str = "caption") -> ScorePass:
    """Cosine similarity of every row's image and text, in file order."""
    started = time.perf_counter()
    dataset = ParquetImages(path, clip.preprocess, clip.image_size)
    cosine = np.full(len(dataset), np.nan, dtype=np.float32)
    result = ScorePass(cosine, workers=0)
    if not len(dataset):
        return result
    result.workers = workers = min(workers, math.ceil(len(dataset) / clip.batch_size))
    loader = dataloader(dataset, clip.batch_size, workers, clip.device)
    texts = ColumnChunks(path, text_column, clip.batch_size)
    start, decoders = 0, set()
    for pixels, ok, errors, pids in loader:
        decoders.update(pids.tolist())
        captions = texts.take(len(ok))
        encode_started = time.perf_counter()
        image_emb = clip.encode_pixels(pixels)
        text_emb = clip.encode_tokens(clip.tokenize(captions))
        result.encode_seconds += time.perf_counter() - encode_started
        scores = (image_emb * text_emb).sum(axis=1)
        flags = ok.numpy()
        scores[~flags] = np.nan
        cosine[start : start + len(scores)] = scores
        for i in np.flatnonzero(~flags):
            result.errors[start + int(i)] = errors[i]
        start += len(scores)
    result.decode_processes = len(decoders - {os.getpid()})
    result.seconds = time.perf_counter() - started
    return result


class ColumnChunks:
    """A column of a Parquet file handed out ``n`` values at a time, across row groups."""

    def __init__(self, path: Path, column: str, batch_rows: int):
        self._batches = iter_path_batches(path, batch_rows, [column])
        self._buffer: list = []

    def take(self, n: int) -> list:
        while len(self._buffer) < n:
            self._buffer.extend(next(self._batches).column(0).to_pylist())
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


def clip_score(cosine: np.ndarray) -> np.ndarray:
    """CLIPScore (Hessel et al. 2021): 2.5 · max(cos, 0)."""
    return (CLIPSCORE_WEIGHT * np.maximum(cosine, 0)).astype(np.float32)


def generated_texts(
    path: Path | list[str], column: str, batch_rows: int = 4096, filesystem: pafs.FileSystem | None = None
) -> tuple[int, int]:
    """(texts of the scene generator's grammar, texts) in a Parquet column, streamed. ``path``: a
    local file, or a partition's committed files on ``filesystem`` (an object store root's)."""
    from refinery.fs import iter_parquet_batches
    from refinery.multimodal.tiny_clip_train import is_generated_caption

    if isinstance(path, list):
        batches = iter_parquet_batches(filesystem or pafs.LocalFileSystem(), path, batch_rows, [column])
    else:
        batches = pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=[column])
    hits = total = 0
    for batch in batches:
        values = batch.column(0).to_pylist()
        hits += sum(is_generated_caption(v) for v in values)
        total += len(values)
    return hits, total


def domain_check(stage: str, path: Path, clip: ClipModel, column: str = "caption") -> tuple[dict, str | None]:
    """For the tiny CLIP only: how much of the partition is of the kind it was trained on, and the
    warning to give when too little is (see :func:`clip_model.synthetic_domain_warning`)."""
    return domain_info(stage, path, clip.synthetic, column)


def domain_info(
    stage: str,
    path: Path | list[str],
    synthetic: bool,
    column: str = "caption",
    filesystem: pafs.FileSystem | None = None,
) -> tuple[dict, str | None]:
    """:func:`domain_check` for a model known only by whether it is the tiny CLIP (``synthetic``);
    ``path`` as :func:`generated_texts` takes it."""
    if not synthetic:
        return {}, None
    hits, total = generated_texts(path, column, filesystem=filesystem)
    warning = synthetic_domain_warning(stage, hits, total, f"{column}s")
    info = {"texts_of_the_models_kind": round(hits / total, 4) if total else 1.0}
    if warning:
        info["clip_model_warning"] = Markdown(f"**Warning.** {warning}")
    return info, warning


class ScoreAttacher(StageProcessor):
    """``run_stage``'s process: attaches a score pass to the rows in file order."""

    def __init__(
        self,
        scores: ScorePass,
        sheet_pairs: int = 6,
        model_info: dict | None = None,
        warning: str | None = None,
    ):
        self.scores = scores
        self.offset = 0
        self.extremes = Extremes(sheet_pairs)
        self.model_info = model_info or {}
        self.warning = warning  # set when the model is out of its depth on this data: log it

    @classmethod
    def score(
        cls, path: Path, clip: ClipModel, workers: int, params: ClipScoreParams, stage: str = "clip_scored"
    ) -> ScoreAttacher:
        """Score every pair of the upstream file first (batched, images decoded in workers)."""
        scores = score_file(path, clip, workers)
        domain, warning = domain_check(stage, path, clip)
        described = {**clip.describe(scores.workers), "decode_processes": scores.decode_processes}
        return cls(scores, params.contact_sheet_pairs, {**described, **domain}, warning)

    def report(self) -> dict:
        s = self.scores
        finite = s.cosine[np.isfinite(s.cosine)]
        return {
            **self.model_info,
            "pairs_per_second": round(s.pairs_per_second, 1),
            "model_seconds": round(s.encode_seconds, 3),
            "mean_cosine": round(float(finite.mean()), 4) if len(finite) else 0.0,
            "contact_sheet": sheet_markdown(
                [
                    ("highest CLIP cosine", self.extremes.highest()),
                    ("lowest CLIP cosine", self.extremes.lowest()),
                ],
                "highest and lowest scored pairs",
            ),
        }

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        n = len(frame)
        cosine = self.scores.cosine[self.offset : self.offset + n]
        if len(cosine) != n:
            raise RuntimeError("the upstream file changed while it was being scored")
        reasons = [
            ("image.decode_failed", self.scores.errors.get(self.offset + i, "not scored"))
            if math.isnan(c)
            else None
            for i, c in enumerate(cosine.tolist())
        ]
        self.offset += n
        out = frame.assign(clip_cosine=cosine, clip_score=clip_score(cosine))
        for row_id, caption, image, c in zip(
            out["id"], out["caption"], out["image"], cosine.tolist(), strict=True
        ):
            self.extremes.add(c, row_id, caption, image)
        return split_batch(out, reasons)


# -- filtering ----------------------------------------------------------------------------------
@dataclass
class FilterPlan:
    """What clip_filtered keeps: the cosine cut and, in top-fraction mode, where the ranks come from."""

    mode: str
    cutoff: float  # the lowest cosine kept (threshold mode: the threshold)
    keep_count: int | None  # top-fraction mode: exactly this many rows
    ranks: SliceRanks | None  # top-fraction mode only: each row's exact rank (1 = best)
    rows: int | None  # top-fraction mode: the partition's rows
    ranking: dict = field(default_factory=dict)  # top-fraction mode: what the ranking steps did


LAION_THRESHOLD = 0.28  # LAION-5B's cut for ViT-B-32 cosines


def resolve_threshold(p: ClipFilterParams, calibrated: float | None) -> float:
    """The configured threshold, else the scoring model's calibrated one, else LAION's."""
    if p.threshold is not None:
        return p.threshold
    return calibrated if calibrated is not None else LAION_THRESHOLD


def threshold_plan(threshold: float) -> FilterPlan:
    """Threshold mode decides each row alone: nothing to read first."""
    return FilterPlan("threshold", threshold, None, None, None)


def ranked_plan(plan: RankPlan, ranks: SliceRanks, ranking: dict | None = None) -> FilterPlan:
    """Top-fraction mode from the workers' ranking (:mod:`refinery.multimodal.clip_rank`)."""
    return FilterPlan("top_fraction", plan.cutoff, plan.keep, ranks, plan.rows, ranking or {})


def _entries(extremes: list) -> list[tuple]:
    """Contact-sheet entries in the order they were seen (the driver's merge keeps first-seen ties)."""
    return [(e.score, e.row_id, e.caption, e.image) for e in sorted(extremes, key=lambda e: -e.order)]


class FilterProcess(StageProcessor):
    """``run_stage``'s process for clip_filtered, remembering the pairs on both sides of the cut.

    On an engine's workers each copy reports its slice's pairs on both sides of the cut in its
    ``summary``; the step's own copy absorbs them in slice order, so its contact sheet is the one
    a single pass over the partition draws."""

    def __init__(
        self, plan: FilterPlan, sheet_pairs: int = 6, scored_by: str = "unknown", warning: str | None = None
    ):
        self.plan = plan
        self.sheet_pairs = sheet_pairs
        self.kept = Extremes(sheet_pairs)  # its lowest: the weakest pairs kept
        self.removed = Extremes(sheet_pairs)  # its highest: the best pairs removed
        self.scored_by = scored_by
        self.warning = warning  # the scoring stage's, carried in its provenance: log it again here
        self._slice: int | None = None  # on a worker: the slice whose pairs kept/removed hold
        self._absorbed: set[str] = set()  # the step's copy: slices whose pairs it has taken

    @classmethod
    def for_plan(cls, plan: FilterPlan, scored: dict, params: ClipFilterParams) -> FilterProcess:
        """The process for one scored partition; ``scored`` is its provenance (the scoring model,
        and its warning where it was out of its domain)."""
        warning = scored.get("clip_model_warning")
        if warning:
            warning = f"clip_filtered keeps and drops pairs by the scores of this warning: {warning}"
        return cls(plan, params.contact_sheet_pairs, scored.get("clip_model", "unknown"), warning)

    def report(self) -> dict:
        plan = self.plan
        extra = {"clip_model_warning": Markdown(f"**Warning.** {self.warning}")} if self.warning else {}
        ranking = {"top_fraction_ranking": Json(plan.ranking)} if plan.ranking else {}
        return {
            **extra,
            "mode": plan.mode,
            "cosine_cutoff": round(plan.cutoff, 4) if np.isfinite(plan.cutoff) else "nothing kept",
            "clip_model": self.scored_by,
            "contact_sheet": sheet_markdown(
                [("weakest pairs kept", self.kept.lowest()), ("best pairs removed", self.removed.highest())],
                "pairs on both sides of the cut",
            ),
            **ranking,
        }

    def summary(self) -> dict:
        if self._slice is None:  # the step's own pass: nothing to hand on
            return {}
        return {
            "clip_extremes": {
                "slice": str(self._slice),  # a string: summaries' numbers are taken as counts
                "kept": _entries(self.kept.lowest()),
                "removed": _entries(self.removed.highest()),
            }
        }

    def absorb(self, delta) -> None:
        extremes = delta.get("clip_extremes")
        if not extremes:
            return
        if extremes["slice"] in self._absorbed:  # an empty slice repeats its worker's last summary
            return
        self._absorbed.add(extremes["slice"])
        for target, entries in ((self.kept, extremes["kept"]), (self.removed, extremes["removed"])):
            for score, row_id, caption, image in entries:
                target.add(score, row_id, caption, image)

    def _enter(self, piece) -> None:
        """A worker's copy starting a slice: its contact-sheet pairs are the slice's own."""
        if piece is not None and piece.index != self._slice:
            self._slice = piece.index
            self.kept, self.removed = Extremes(self.sheet_pairs), Extremes(self.sheet_pairs)

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        plan = self.plan
        piece = current_slice()
        self._enter(piece)
        reasons: list = []
        ranks: list = []
        if plan.mode == "threshold":
            for cos in frame["clip_cosine"].tolist():
                keep = cos >= plan.cutoff
                reasons.append(
                    None if keep else ("clip.below_threshold", f"cosine {cos:.4f} < {plan.cutoff}")
                )
                ranks.append(None)
        else:
            ranks = plan.ranks.take(len(frame), piece).tolist()
            for rank in ranks:
                detail = (
                    f"rank {rank} of {plan.rows}; top {plan.keep_count} kept (cosine ≥ {plan.cutoff:.4f})"
                )
                reasons.append(None if rank <= plan.keep_count else ("clip.not_in_top_fraction", detail))
        out = frame.assign(clip_rank=pd.array(ranks, dtype="Int64"))
        for row_id, caption, image, cos, reason in zip(
            out["id"], out["caption"], out["image"], out["clip_cosine"].tolist(), reasons, strict=True
        ):
            (self.kept if reason is None else self.removed).add(cos, row_id, caption, image)
        return split_batch(out, reasons)
