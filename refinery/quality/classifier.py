"""A fastText-like quality classifier (GPT-3 style): reference text vs raw web-like text.

GPT-3 (Brown et al., 2020, appendix A) trained a linear classifier to tell curated text (WebText,
Wikipedia, books) from raw Common Crawl, then kept a crawled document when
``np.random.pareto(α=9) > 1 - score``: mostly high scores, plus a little of everything else.

The model is fastText's supervised architecture (Joulin et al., 2017): the document is its word
uni- and bigrams (of :func:`refinery.quality.normalize.normalized_tokens`, the same tokens the
n-gram model sees), hashed into ``buckets`` rows of an embedding table; the mean of those rows
goes through one linear layer to a logit. Trained with torch; scored with numpy (the same
arithmetic, no torch import at scoring time).

The raw class is drawn from the very documents ``quality_scored`` later scores, so the models are
cross-fitted: documents are split into folds by a hash of their key, one model per fold is trained
on the other folds, and each document is scored by the model that never saw it. The held-out
accuracy and ROC AUC are these out-of-fold scores over every training document.

Saved as safetensors (no pickle): per fold, the table rows already projected by the linear layer
(the model is linear after the mean, so that is all scoring needs) and the bias; the feature
settings and the normalization version in the header.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field

from refinery.batch import BatchResult, split_batch
from refinery.ids import doc_key
from refinery.kernel.processor import StageProcessor
from refinery.metadata import CheckOutcome, FilePath, Json, Markdown
from refinery.names import CLEAN_DOCUMENTS, QUALITY_CLASSIFIER
from refinery.paths import Layout
from refinery.quality.normalize import NORMALIZATION_VERSION, normalized_tokens
from refinery.storage import Storage

FORMAT = "refinery-fasttext-cv-1"
QUALITY_FIELDS = [pa.field("quality_score", pa.float64())]
# fastText's n-gram hash combination constant (src/dictionary.cc).
_NGRAM_MULT = np.uint64(116049371)


class ClassifierError(ValueError):
    """The classifier file is missing, foreign or inconsistent, or training data is insufficient."""


# -- features ----------------------------------------------------------------------------------


@lru_cache(maxsize=1 << 20)
def _token_hash(token: str) -> int:
    # crc32 is stable across processes and machines (Python's hash() is salted per process).
    return zlib.crc32(token.encode("utf-8", "surrogatepass"))


def hashed_features(tokens: Sequence[str], buckets: int, ngrams: int) -> np.ndarray:
    """Row ids of the token uni- .. ``ngrams``-grams in a table of ``buckets`` rows."""
    if not tokens:
        return np.zeros(0, dtype=np.int64)
    hashes = np.fromiter((_token_hash(t) for t in tokens), dtype=np.uint64, count=len(tokens))
    parts = [hashes]
    combined = hashes
    for n in range(2, ngrams + 1):
        if len(hashes) < n:
            break
        combined = combined[:-1] * _NGRAM_MULT + hashes[n - 1 :]
        parts.append(combined)
    return (np.concatenate(parts) % np.uint64(buckets)).astype(np.int64)


def document_features(text: str, buckets: int, ngrams: int, max_tokens: int) -> np.ndarray:
    return hashed_features(normalized_tokens(text)[:max_tokens], buckets, ngrams)


# -- parameters ----------------------------------------------------------------------------------


class ClassifierTrainParams(BaseModel):
    """How ``quality_classifier`` trains. Defaults: fastText-like, small enough to train in seconds."""

    reference_source: str = Field("curated", description="Positives: inbox/reference/<this>/.")
    negatives_asset: str = Field(
        CLEAN_DOCUMENTS, description="Negatives: this asset's documents, from every text_source partition."
    )
    max_documents_per_class: int = Field(
        50_000, ge=10, description="Stable hash-chosen subsample per class beyond this size."
    )
    folds: int = Field(
        2,
        ge=2,
        le=10,
        description="Cross-fitting: one model per fold, each trained on the other folds. Every training "
        "document is scored (for the metrics, and later by quality_scored) by the model that did not see it.",
    )
    buckets: int = Field(1 << 18, ge=1024, description="Rows of the hashed n-gram embedding table.")
    dim: int = Field(16, ge=2, le=256, description="Embedding width.")
    ngrams: int = Field(2, ge=1, le=4, description="Word n-grams up to this length.")
    max_tokens: int = Field(4096, ge=16, description="Tokens read per document (the start of the document).")
    epochs: int = Field(
        5, ge=1, le=200, description="Passes over the training share (fastText's default: 5)."
    )
    learning_rate: float = Field(0.01, gt=0, description="Adam step size (higher memorizes small corpora).")
    batch_size: int = Field(32, ge=1, description="Documents per training step.")
    seed: int = Field(
        0, description="Seeds initialisation and shuffling: the same data gives the same model."
    )
    min_documents_per_class: int = Field(20, ge=2, description="Refuse to train on fewer per class.")
    min_heldout_auc: float = Field(
        0.55,
        ge=0,
        le=1,
        description="The blocking asset check fails below this held-out ROC AUC. Low on purpose: raw text "
        "that is mostly good prose cannot be told from the reference much better than chance.",
    )


class QualityParams(BaseModel):
    """How ``quality_scored`` keeps documents.

    ``threshold`` (default): keep if ``quality_score`` ≥ ``threshold``; when ``threshold`` is None the
    cutoff is the ``reference_percentile``-th percentile of the scores of held-out reference documents
    (out-of-fold, recorded by ``quality_classifier``): keep what scores at least like the bottom tenth
    of the reference text. That adapts to how separable the data is (raw text that is mostly good prose
    gives even good documents middling scores). ``pareto``: GPT-3's rule, keep if
    ``pareto(alpha) > 1 - score``, seeded per document; it assumes good documents score near 1.
    """

    mode: Literal["threshold", "pareto"] = Field(
        "threshold", description="'threshold' (see threshold/reference_percentile) or 'pareto' (GPT-3)."
    )
    threshold: float | None = Field(
        None, ge=0, le=1, description="Absolute score cutoff; None: the reference_percentile cutoff."
    )
    reference_percentile: float = Field(
        10.0,
        gt=0,
        lt=100,
        description="Percentile of the reference documents' out-of-fold scores (threshold None).",
    )
    pareto_alpha: float = Field(9.0, gt=0, description="Shape of the Pareto (Lomax) noise; GPT-3 used 9.")
    seed: int = Field(0, description="Seeds the per-document noise: the same document always draws the same.")

    def cutoff(self, reference_percentiles: list[float] | None) -> tuple[float, str]:
        """The score cutoff of threshold mode, and where it comes from."""
        if self.threshold is not None:
            return self.threshold, "threshold"
        if not reference_percentiles or len(reference_percentiles) != 101:
            raise ClassifierError(
                "this classifier has no recorded reference score percentiles (a model file without its "
                "quality_classifier sidecar): set quality_scored's threshold explicitly"
            )
        value = float(np.interp(self.reference_percentile, np.arange(101), reference_percentiles))
        return value, f"p{self.reference_percentile:g} of the reference documents' out-of-fold scores"


# -- training ------------------------------------------------------------------------------------


def _stable_unit(key: str) -> float:
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def bottom_k(items: Iterable[tuple[str, str]], k: int, salt: str) -> list[tuple[str, str]]:
    """A stable subsample of at most ``k`` (key, text) pairs, in memory O(k), in key order."""
    heap: list[tuple[float, str, str]] = []  # max-heap on the unit hash via negation
    for key, text in items:
        u = _stable_unit(f"{salt}:{key}")
        if len(heap) < k:
            heapq.heappush(heap, (-u, key, text))
        elif -heap[0][0] > u:
            heapq.heapreplace(heap, (-u, key, text))
    return sorted(((key, text) for _, key, text in heap), key=lambda kv: kv[0])


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U with average ranks for ties)."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if not pos or not neg:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=float)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def fold_of(key: str, folds: int) -> int:
    """The fold of a document key (``<source>/<id>``): stable, so scoring finds the model that did not
    train on the document. Keys, not texts: ids survive the later stages, texts may be rewritten."""
    return min(folds - 1, int(_stable_unit(f"fold:{key}") * folds))


@dataclass
class TrainedClassifier:
    embeddings: list[np.ndarray]  # per fold: (buckets, dim) float32
    weights: list[np.ndarray]  # per fold: (dim,) float32
    biases: list[float]
    config: dict
    metrics: dict

    def row_logits(self) -> np.ndarray:
        """(folds, buckets): each table row projected by its fold's linear layer.

        The model is linear after the mean, so mean(E[f]) · w + b = mean(E[f] · w) + b: the projected
        rows are all scoring needs (a 16x smaller file than the tables)."""
        return np.stack([e @ w for e, w in zip(self.embeddings, self.weights, strict=True)]).astype(
            np.float32
        )


def _bags(features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(f) for f in features), dtype=np.int64, count=len(features))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    flat = np.concatenate(features) if features else np.zeros(0, dtype=np.int64)
    return flat, offsets


def _fit(feats, labels: np.ndarray, train_idx: np.ndarray, params: ClassifierTrainParams, seed: int):
    """One fastText-like model on the given rows: (embedding, weight, bias, loss per epoch)."""
    import torch

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    emb = torch.nn.EmbeddingBag(params.buckets, params.dim, mode="mean", sparse=True)
    torch.nn.init.uniform_(emb.weight, -1.0 / params.dim, 1.0 / params.dim)
    linear = torch.nn.Linear(params.dim, 1)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    opt_sparse = torch.optim.SparseAdam(list(emb.parameters()), lr=params.learning_rate)
    opt_dense = torch.optim.Adam(list(linear.parameters()), lr=params.learning_rate)
    n_pos = float(labels[train_idx].sum())
    n_neg = float(len(train_idx) - n_pos)
    # Both classes weigh the same in the loss, whatever their sizes.
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([n_neg / max(n_pos, 1.0)]))
    losses = []
    for _ in range(params.epochs):
        perm = train_idx[torch.randperm(len(train_idx), generator=generator).numpy()]
        epoch_loss = 0.0
        for start in range(0, len(perm), params.batch_size):
            batch = perm[start : start + params.batch_size]
            flat, offsets = _bags([feats[i] for i in batch])
            logits = linear(emb(torch.from_numpy(flat), torch.from_numpy(offsets))).squeeze(1)
            loss = loss_fn(logits, torch.from_numpy(labels[batch]))
            opt_sparse.zero_grad()
            opt_dense.zero_grad()
            loss.backward()
            opt_sparse.step()
            opt_dense.step()
            epoch_loss += float(loss.detach()) * len(batch)
        losses.append(round(epoch_loss / len(perm), 5))
    return (
        emb.weight.detach().numpy().astype(np.float32, copy=True),
        linear.weight.detach().numpy().reshape(-1).astype(np.float32),
        float(linear.bias.detach()[0]),
        losses,
    )


def train_classifier(
    positives: list[tuple[str, str]], negatives: list[tuple[str, str]], params: ClassifierTrainParams
) -> TrainedClassifier:
    """Train one model per fold on (key, text) pairs; the metrics are out-of-fold (cross-validated).

    Cross-fitting matters here more than usual: quality_scored scores the very documents the raw class
    was drawn from, and a model scoring documents it was trained on as negatives has memorized them
    (on small corpora, good ones end up far below unseen text of the same quality).
    """
    if len(positives) < params.min_documents_per_class or len(negatives) < params.min_documents_per_class:
        raise ClassifierError(
            f"the quality classifier needs at least {params.min_documents_per_class} documents per class; "
            f"found {len(positives)} reference and {len(negatives)} raw documents"
        )
    started = time.perf_counter()
    docs = [(k, t, 1.0) for k, t in positives] + [(k, t, 0.0) for k, t in negatives]
    labels = np.array([y for _, _, y in docs], dtype=np.float32)
    folds = np.array([fold_of(k, params.folds) for k, _, _ in docs])
    feats = [document_features(t, params.buckets, params.ngrams, params.max_tokens) for _, t, _ in docs]
    oof = np.empty(len(docs))
    trained = TrainedClassifier([], [], [], {}, {})
    losses = []
    for k in range(params.folds):
        train_idx, test_idx = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        if len(set(labels[train_idx].tolist())) < 2:
            raise ClassifierError(f"fold {k}'s training share lacks a class: add documents or lower folds")
        emb, weight, bias, fold_losses = _fit(feats, labels, train_idx, params, params.seed + k)
        trained.embeddings.append(emb)
        trained.weights.append(weight)
        trained.biases.append(bias)
        losses.append(fold_losses)
        row_logit = (emb @ weight).astype(np.float64)
        oof[test_idx] = [row_logit[feats[i]].mean() + bias if len(feats[i]) else bias for i in test_idx]
    oof = 1.0 / (1.0 + np.exp(-oof))
    trained.config = {
        "format": FORMAT,
        "buckets": params.buckets,
        "dim": params.dim,
        "ngrams": params.ngrams,
        "max_tokens": params.max_tokens,
        "folds": params.folds,
        "normalization": NORMALIZATION_VERSION,
    }
    is_ref = labels > 0.5
    trained.metrics = {
        "reference_score_percentiles": np.percentile(oof[is_ref], np.arange(101)).round(6).tolist(),
        "heldout_accuracy": round(float(((oof >= 0.5) == is_ref).mean()), 4),
        "heldout_auc": round(roc_auc(is_ref, oof), 4),
        "heldout_documents": {"reference": int(is_ref.sum()), "raw": int((~is_ref).sum())},
        "heldout_mean_score": {
            "reference": round(float(oof[is_ref].mean()), 4),
            "raw": round(float(oof[~is_ref].mean()), 4),
        },
        "evaluation": f"{params.folds}-fold cross-fitting: every document scored by the model that did not "
        "train on it",
        "epoch_loss": losses,
        "train_seconds": round(time.perf_counter() - started, 3),
    }
    return trained


# -- saving, loading, scoring --------------------------------------------------------------------


def save_classifier(trained: TrainedClassifier, path: Path) -> None:
    from safetensors.numpy import save_file

    tensors = {
        "row_logits": np.ascontiguousarray(trained.row_logits(), dtype=np.float32),
        "bias": np.asarray(trained.biases, dtype=np.float32),
    }
    save_file(tensors, str(path), metadata={"config": json.dumps(trained.config, sort_keys=True)})


class QualityClassifier:
    """The trained classifier, scoring with numpy: per fold, the mean of the document's projected
    n-gram rows plus a bias, then a logistic.

    With keys (``<source>/<id>``), each document is scored by the model of its fold, the one that did
    not train on it; without, by the mean logit of every fold's model.
    """

    def __init__(
        self, row_logits: np.ndarray, biases: np.ndarray, config: dict, path: Path | None, sha256: str
    ):
        self.row_logits = np.asarray(row_logits, dtype=np.float64)
        self.biases = np.asarray(biases, dtype=np.float64)
        self.config, self.path, self.sha256 = config, path, sha256
        self.buckets, self.ngrams = int(config["buckets"]), int(config["ngrams"])
        self.max_tokens, self.folds = int(config["max_tokens"]), int(config["folds"])

    @classmethod
    def from_trained(cls, trained: TrainedClassifier) -> QualityClassifier:
        return cls(trained.row_logits(), np.asarray(trained.biases), trained.config, None, "")

    def features(self, text: str) -> np.ndarray:
        return document_features(text, self.buckets, self.ngrams, self.max_tokens)

    def score_features(self, features: list[np.ndarray], keys: Sequence[str] | None = None) -> np.ndarray:
        out = np.empty(len(features), dtype=np.float64)
        for i, f in enumerate(features):
            if keys is None:
                rows = self.row_logits[:, f].mean(axis=1) if len(f) else np.zeros(self.folds)
                out[i] = float((rows + self.biases).mean())
            else:
                k = fold_of(keys[i], self.folds)
                out[i] = (self.row_logits[k, f].mean() if len(f) else 0.0) + self.biases[k]
        return 1.0 / (1.0 + np.exp(-out))

    def score(self, texts: Iterable[str], keys: Sequence[str] | None = None) -> np.ndarray:
        """P(reference-like) per text, in [0, 1]."""
        return self.score_features([self.features(t) for t in texts], keys)

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, **self.config}


@lru_cache(maxsize=4)
def _load(path: str, size: int, mtime_ns: int) -> QualityClassifier:
    from safetensors import SafetensorError, safe_open

    from refinery.models import loads
    from refinery.quality.artifacts import file_sha256

    loads.record("classifier")
    try:
        with safe_open(path, framework="numpy") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as err:
        raise ClassifierError(
            f"{path} is not a quality classifier (expected a safetensors file written by "
            f"quality_classifier): {err}"
        ) from err
    try:
        config = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError) as err:
        raise ClassifierError(f"{path} has no refinery classifier config in its header") from err
    if config.get("format") != FORMAT or set(tensors) != {"row_logits", "bias"}:
        raise ClassifierError(
            f"{path} is a {config.get('format')!r} model with tensors {sorted(tensors)}; expected {FORMAT!r} "
            "with row_logits and bias: re-materialize quality_classifier"
        )
    if config.get("normalization") != NORMALIZATION_VERSION:
        raise ClassifierError(
            f"{path} was trained on text normalized as {config.get('normalization')!r}, but this version of "
            f"Refinery normalizes as {NORMALIZATION_VERSION!r}: re-materialize quality_classifier"
        )
    rows, bias = tensors["row_logits"], tensors["bias"]
    if rows.shape != (config["folds"], config["buckets"]) or bias.shape != (config["folds"],):
        raise ClassifierError(f"{path}: tensor shapes {rows.shape}/{bias.shape} disagree with its config")
    return QualityClassifier(rows, bias, config, Path(path), file_sha256(Path(path)))


def load_classifier(path: str | Path) -> QualityClassifier:
    """Load once per file version in this process, with clear errors for a missing or foreign file."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"no quality classifier at {path}: materialize the quality_classifier asset (it trains one), or "
            "set the quality_classifier resource's model_path to a file it produced"
        )
    stat = path.stat()
    return _load(str(path), stat.st_size, stat.st_mtime_ns)


def pareto_noise(keys: Sequence[str], alpha: float, seed: int) -> np.ndarray:
    """One Lomax(alpha) draw per key, as ``np.random.pareto`` draws, but fixed by (seed, key).

    Inverse CDF of a stable uniform: the same document gets the same draw in every run and batch
    layout, so re-materializing unchanged input keeps the same documents.
    """
    u = np.fromiter((_stable_unit(f"pareto:{seed}:{k}") for k in keys), dtype=float, count=len(keys))
    return (1.0 - u) ** (-1.0 / alpha) - 1.0


class QualityScorer(StageProcessor):
    """Scores batches and keeps by the configured rule; ``cutoff`` is used in threshold mode."""

    def __init__(
        self,
        classifier: QualityClassifier,
        params: QualityParams,
        source: str,
        cutoff: float,
        cutoff_origin: str = "",
        info: dict | None = None,
    ):
        self.classifier, self.params, self.source, self.cutoff = classifier, params, source, cutoff
        self.cutoff_origin = cutoff_origin
        self.info = info or {}

    @classmethod
    def for_model(
        cls, classifier: QualityClassifier, info: dict, params: QualityParams, source: str
    ) -> QualityScorer:
        """The scorer for a loaded classifier and its recorded description: threshold mode cuts
        at the reference score percentile the description records (or a fixed threshold)."""
        if params.mode == "threshold":
            cutoff, origin = params.cutoff(info.get("reference_score_percentiles"))
        else:
            cutoff, origin = math.nan, f"pareto noise (α={params.pareto_alpha:g}, seed {params.seed})"
        return cls(classifier, params, source, cutoff, origin, info)

    def provenance(self) -> dict:
        return {
            "model": self.classifier.describe(),
            "cutoff": None if math.isnan(self.cutoff) else self.cutoff,
        }

    def report(self) -> dict:
        p = self.params
        rule = (
            f"keep if quality_score ≥ {self.cutoff:.4f} ({self.cutoff_origin})"
            if p.mode == "threshold"
            else self.cutoff_origin
        )
        return {
            "model": Json(self.classifier.describe()),
            "model_path": FilePath.of(self.classifier.path),
            "model_sha256": self.classifier.sha256,
            "keep_rule": Markdown(f"mode **{p.mode}**: {rule}"),
            "classifier_heldout_auc": self.info.get("heldout_auc", math.nan),
        }

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        feats = [self.classifier.features(t) for t in frame["text"].tolist()]
        keys = [doc_key(self.source, i) for i in frame["id"].tolist()]
        scores = self.classifier.score_features(feats, keys)
        return self.decide(frame, scores, np.array([len(f) > 0 for f in feats], dtype=bool))

    def decide(self, frame: pd.DataFrame, scores: np.ndarray, has_tokens: np.ndarray) -> BatchResult:
        """Keep or remove each row by its score (``has_tokens``: whether anything was left to
        score after normalization)."""
        keys = [doc_key(self.source, i) for i in frame["id"].tolist()]
        p = self.params
        noise = pareto_noise(keys, p.pareto_alpha, p.seed) if p.mode == "pareto" else np.zeros(len(frame))
        reasons = []
        for f, s, x in zip(has_tokens.tolist(), scores, noise, strict=True):
            if not f:
                reasons.append(("quality.no_tokens", "nothing left to score after normalization"))
            elif p.mode == "pareto":
                keep = x > 1.0 - s
                detail = f"score {s:.3f}: pareto(α={p.pareto_alpha:g}) draw {x:.3f} ≤ 1 - score"
                reasons.append(None if keep else ("quality.pareto", detail))
            elif s >= self.cutoff:
                reasons.append(None)
            else:
                reasons.append(("quality.below_threshold", f"score {s:.3f} < cutoff {self.cutoff:.3f}"))
        return split_batch(frame.assign(quality_score=scores), reasons)


# -- the quality_classifier asset's work ----------------------------------------------------------


@dataclass
class ClassifierResult:
    artifact: object  # ModelArtifact
    metrics: dict
    positives: int
    negatives: int
    negatives_by_partition: dict[str, int]
    reference_quarantined: int
    seconds: float
    params: ClassifierTrainParams | None = None

    def report(self) -> dict:
        """What quality_classifier shows: the model file, held-out quality, what it learned from."""
        from refinery.quality.reference import percentile_markdown

        m, artifact = self.metrics, self.artifact
        return {
            "model_path": FilePath.of(artifact.path),
            "model_sha256": artifact.sha256,
            "heldout_accuracy": m["heldout_accuracy"],
            "heldout_auc": m["heldout_auc"],
            "heldout_mean_score": Json(m["heldout_mean_score"]),
            "heldout_documents": Json(m["heldout_documents"]),
            "evaluation": m["evaluation"],
            "negatives_by_partition": Json(self.negatives_by_partition),
            "reference_quarantined": self.reference_quarantined,
            "reference_score_percentiles": Markdown(
                percentile_markdown(m["reference_score_percentiles"], "{:.3f}")
            ),
            "epoch_loss": Json(m["epoch_loss"]),
            "normalization": NORMALIZATION_VERSION,
            "parameters": Json(self.params.model_dump() if self.params else {}),
            "seconds": round(self.seconds, 3),
        }

    def checks(self) -> list[CheckOutcome]:
        auc = self.metrics["heldout_auc"]
        minimum = self.params.min_heldout_auc if self.params else 0.0
        return [
            CheckOutcome(
                "heldout_auc",
                bool(math.isfinite(auc) and auc >= minimum),
                {"heldout_auc": auc, "min_heldout_auc": minimum},
            )
        ]


def collect_training_documents(
    layout: Layout, storage: Storage, params: ClassifierTrainParams
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict[str, int], int]:
    """Positives from the reference inbox, negatives from every partition of ``negatives_asset``.

    Each class is a stable hash-chosen subsample of at most ``max_documents_per_class`` (memory
    O(that), however large the corpus). Returns (positives, negatives, per-partition negative counts,
    reference rows quarantined by the reader).
    """
    from refinery.quality.reference import read_reference

    corpus = read_reference(layout, params.reference_source)
    positives = bottom_k(
        ((doc_key(f"reference:{params.reference_source}", i), t) for i, t in corpus.documents),
        params.max_documents_per_class,
        "positives",
    )
    partitions = storage.partitions(params.negatives_asset)
    if not partitions:
        raise ClassifierError(
            f"no partition of '{params.negatives_asset}' under {storage.root}: materialize it for at "
            "least one text source first (its documents are the classifier's raw, web-like class)"
        )
    counts: dict[str, int] = {}

    def raw_documents():
        for partition in partitions:
            counts[partition] = 0
            for batch in storage.iter_batches(params.negatives_asset, partition, columns=["id", "text"]):
                counts[partition] += len(batch)
                yield from zip((doc_key(partition, i) for i in batch["id"]), batch["text"], strict=True)

    negatives = bottom_k(raw_documents(), params.max_documents_per_class, "negatives")
    return positives, negatives, counts, corpus.quarantined


def train_quality_classifier(
    layout: Layout, storage: Storage, params: ClassifierTrainParams
) -> ClassifierResult:
    """Train on the reference corpus vs raw documents and publish under models/quality_classifier."""

    from refinery.quality.artifacts import models_dir, publish
    from refinery.tempfiles import staging_dir

    started = time.perf_counter()
    positives, negatives, by_partition, quarantined = collect_training_documents(layout, storage, params)
    trained = train_classifier(positives, negatives, params)
    out_dir = models_dir(layout.home, QUALITY_CLASSIFIER)
    out_dir.mkdir(parents=True, exist_ok=True)
    with staging_dir(out_dir, "train") as temp:
        produced = Path(temp) / "model.safetensors"
        save_classifier(trained, produced)
        info = {
            "kind": "fasttext-like",
            **trained.config,
            "source": params.reference_source,
            "negatives_asset": params.negatives_asset,
            "negatives_by_partition": by_partition,
            "params": params.model_dump(),
            **trained.metrics,
        }
        artifact = publish(out_dir, f"{QUALITY_CLASSIFIER}-d{params.dim}", produced, ".safetensors", info)
    return ClassifierResult(
        artifact,
        trained.metrics,
        len(positives),
        len(negatives),
        by_partition,
        quarantined,
        time.perf_counter() - started,
        params,
    )


@dataclass(frozen=True)
class QualityModelLoader:
    """Which quality classifier to apply: ``model_path`` '' for the one quality_classifier trained
    last (models/quality_classifier/current.json under the home), else a ``.safetensors`` file it
    wrote. A plain value that pickles, so a worker loads the same model."""

    model_path: str = ""

    def load(self, layout: Layout) -> tuple[QualityClassifier, dict]:
        """The classifier (loaded once per process per file) and its recorded description."""
        from refinery.quality.artifacts import current, models_dir, sidecar

        if self.model_path:
            path = Path(self.model_path).expanduser()
            return load_classifier(path), sidecar(path.resolve()) or {}
        artifact = current(models_dir(layout.home, QUALITY_CLASSIFIER))
        if artifact is None:
            raise FileNotFoundError(
                f"no quality classifier under {models_dir(layout.home, QUALITY_CLASSIFIER)}: materialize the "
                "quality_classifier asset first, or set the quality_classifier resource's model_path"
            )
        return load_classifier(artifact.path), artifact.info

    def describe(self, layout: Layout) -> tuple[ClassifierCard, dict]:
        """What :meth:`load` would load, read from the file's header and sidecar without loading
        the tensors (what a Ray driver records while the actors load the model)."""
        from refinery.quality.artifacts import current, models_dir, sidecar

        if self.model_path:
            path = Path(self.model_path).expanduser()
            return classifier_card(path), sidecar(path.resolve()) or {}
        artifact = current(models_dir(layout.home, QUALITY_CLASSIFIER))
        if artifact is None:
            return self.load(layout)  # raises the missing-model error
        return classifier_card(artifact.path), artifact.info


@dataclass(frozen=True)
class ClassifierCard:
    """A classifier file described without its tensors: the same ``describe()`` as the loaded
    :class:`QualityClassifier`, so the provenance is the same on every engine."""

    path: Path
    sha256: str
    config: dict

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, **self.config}


def classifier_card(path: str | Path) -> ClassifierCard:
    """The header of a classifier file (its config) and its hash; the same errors as loading."""
    from safetensors import SafetensorError, safe_open

    from refinery.quality.artifacts import file_sha256

    path = Path(path).expanduser().resolve()
    if not path.is_file():
        load_classifier(path)  # raises the missing-file error
    try:
        with safe_open(str(path), framework="numpy") as fh:
            config = json.loads((fh.metadata() or {})["config"])
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise ClassifierError(
            f"{path} is not a quality classifier written by quality_classifier: {err}"
        ) from err
    return ClassifierCard(path, file_sha256(path), config)


# -- on a Ray actor pool (refinery.engine.model_stages) ------------------------------------------


def load_for_pool(loader: QualityModelLoader, layout: Layout) -> QualityClassifier:
    """What each model actor loads (once)."""
    return loader.load(layout)[0]


def score_rows(classifier: QualityClassifier, frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """An actor's work on one batch: each row's score and whether it had tokens to score."""
    feats = [classifier.features(t) for t in frame["text"].tolist()]
    keys = [doc_key(source, i) for i in frame["id"].tolist()]
    return pd.DataFrame(
        {
            "quality_score": classifier.score_features(feats, keys),
            "has_tokens": np.array([len(f) > 0 for f in feats], dtype=bool),
        }
    )


class ScoredQuality(StageProcessor):
    """The keep/remove decision over one slice whose scores the actors computed, row for row."""

    def __init__(self, scorer: QualityScorer, outputs: pa.Table | None):
        self.scorer = scorer
        self.scores = outputs.column("quality_score").to_numpy() if outputs is not None else np.zeros(0)
        self.has_tokens = (
            outputs.column("has_tokens").to_numpy(zero_copy_only=False) if outputs is not None else None
        )
        self.offset = 0

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        end = self.offset + len(frame)
        scores, tokens = self.scores[self.offset : end], self.has_tokens[self.offset : end]
        self.offset = end
        return self.scorer.decide(frame, scores, tokens)


def attach_scores(
    params: QualityParams, source: str, cutoff: float, origin: str, outputs: pa.Table | None, model: dict
) -> ScoredQuality:
    """The per-slice processor of the pooled stage (no model: the scores are the actors')."""
    return ScoredQuality(QualityScorer(None, params, source, cutoff, origin), outputs)  # type: ignore[arg-type]
