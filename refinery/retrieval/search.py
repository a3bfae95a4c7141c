"""``refinery search "query text"``: similarity search over a collection, answered with each hit's stage.

The query is embedded with the model that embedded the collection, read from the index's provenance
(a different embedder is refused: its vectors would not be comparable). Each hit is then followed
through the collection's stages in storage, so the answer says where the document stands: in the
final stage, rejected by a later stage (with the reason), or not yet processed further.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from refinery.object_storage import ObjectStorage, open_storage
from refinery.paths import Layout, storage_root
from refinery.retrieval.index import ModelMismatch, VectorIndex
from refinery.retrieval.stage_lookup import StageLookup
from refinery.storage import Storage
from refinery.vector_collections import Collection, collection

HIT_COLUMNS = ["rank", "score", "source", "id", "stage", "status", "rejected_by", "reason", "reason_detail"]


def embed_query(
    texts: list[str], which: Collection, model: str, embedder=None, clip=None, provenance: dict | None = None
) -> np.ndarray:
    """Query vectors from the collection's model; a model other than the index's is refused."""
    if which.encoder == "sentence":
        if embedder is None:
            from refinery.models.embedder import load_embedder

            # On CPU the ONNX backend: no torch import, so a cold call answers in about a second
            # (REFINERY_SEARCH_BACKEND=torch restores the sentence-transformers path).
            embedder = load_embedder(
                model,
                device=os.environ.get("REFINERY_SEARCH_DEVICE", "cpu"),
                backend=os.environ.get("REFINERY_SEARCH_BACKEND", "auto"),
            )
        if embedder.name != model:
            raise ModelMismatch(
                f"the {which.name} index holds embeddings of {model!r}; the query embedder is "
                f"{embedder.name!r}. Search with {model!r}, or re-materialize {which.asset} and the index "
                "with the new model"
            )
        return embedder.encode(texts)
    if clip is None:
        weights = (provenance or {}).get("weights")
        try:
            from refinery.multimodal.clip_model import load_clip

            clip = load_clip(checkpoint=weights, device=os.environ.get("REFINERY_SEARCH_DEVICE", "cpu"))
        except Exception as err:  # a built-in architecture needs its name: the caller must pass the model
            raise ValueError(
                f"the {which.name} collection is searched with the text tower of CLIP {model!r} "
                f"(weights {weights}), which could not be loaded by itself ({err}): pass clip="
            ) from err
    # A CLIP is known by its weights file (its display name depends on how it was pointed at).
    weights = (provenance or {}).get("weights")
    if (clip.weights != weights) if weights else (clip.name != model):
        raise ModelMismatch(
            f"the {which.name} index holds embeddings of CLIP {model!r} (weights {weights}); the query model "
            f"is {clip.name!r} (weights {clip.weights})"
        )
    return clip.encode_texts(texts)


_LOOKUP = StageLookup()  # shared by the calls of one process (an MCP server, a notebook)
_INDEXES: dict[tuple[str, str], VectorIndex] = {}  # its open segments, reopened when rebuilt


def _index(layout: Layout, which: Collection) -> VectorIndex:
    key = (str(layout.index), which.name)
    if key not in _INDEXES:
        _INDEXES[key] = VectorIndex.at(layout, which)
    return _INDEXES[key]


def describe_hits(
    storage: Storage | ObjectStorage, hits: pd.DataFrame, which: Collection, lookup: StageLookup | None = None
) -> pd.DataFrame:
    """Add stage, status (final / rejected / pending / missing), the rejection and the stage's columns.

    The stage rows come from ``lookup`` (default: the process's shared :class:`StageLookup`), which
    indexes each stage file once and then reads only the row groups holding the hits."""
    lookup = _LOOKUP if lookup is None else lookup
    out = hits.rename(columns={"partition": "source"}).copy()
    for column in ("stage", "status", "rejected_by", "reason", "reason_detail"):
        out[column] = None
    if out.empty:
        return out
    key = list(zip(out["source"], out["id"], strict=True))
    found: dict[tuple, dict] = {}
    stage_of: dict[tuple, int] = {}
    for level, asset in enumerate(which.stages):
        rows = lookup.rows(storage, asset, out, rejected=False)
        for record in rows.to_dict("records"):
            k = (record["source"], record["id"])
            stage_of[k], found[k] = level, record
    rejected: dict[tuple, tuple[str, dict]] = {}
    for asset in which.stages[1:]:
        rows = lookup.rows(storage, asset, out, rejected=True)
        for record in rows.to_dict("records"):
            rejected[(record["source"], record["id"])] = (asset, record)
    columns: dict[str, list] = {c: [] for c in ("stage", "status", "rejected_by", "reason", "reason_detail")}
    extra: list[dict] = []
    for k in key:
        level = stage_of.get(k)
        record = dict(found.get(k, {}))
        stage = status = rejected_by = reason = detail = None
        if level is None:
            status = "missing"
        else:
            stage = which.stages[level]
            nxt = which.stages[level + 1] if level + 1 < len(which.stages) else None
            if nxt is None:
                status = "final"
            elif k in rejected and rejected[k][0] == nxt:
                rejected_by, rej = rejected[k]
                status, reason, detail = "rejected", rej.get("reason"), rej.get("reason_detail")
                record = {**record, **{c: v for c, v in rej.items() if c not in ("reason", "reason_detail")}}
            else:
                status = "pending"
        for column, value in zip(columns, (stage, status, rejected_by, reason, detail), strict=True):
            columns[column].append(value)
        record.pop("source", None)
        record.pop("id", None)
        extra.append(record)
    for column, values in columns.items():
        out[column] = pd.Series(values, index=out.index, dtype=object)
    details = pd.DataFrame(extra, index=out.index)
    details = details.drop(columns=[c for c in details.columns if c in out.columns])
    text = which.text_column
    ordered = [c for c in [text] if c in details.columns] + [c for c in details.columns if c != text]
    return pd.concat([out, details[ordered]], axis=1)


def search(
    query: str | list[str],
    k: int = 10,
    *,
    home: str | os.PathLike | None = None,
    collection_name: str = "documents",
    exact: bool = False,
    partitions: list[str] | None = None,
    embedder=None,
    clip=None,
    expansion: int | None = None,
    with_stage: bool = True,
    lookup: StageLookup | None = None,
) -> pd.DataFrame:
    """The ``k`` nearest documents to each query text, with source, stage, status and cosine score.

    One row per hit: ``query`` (the text), ``rank``, ``score``, ``source``, ``id``, ``stage`` (the last
    stage whose output holds it), ``status`` (``final``, ``rejected`` with ``rejected_by`` / ``reason``,
    ``pending`` or ``missing``), then that stage's columns (text first, with its scores).
    The index's open segments and the stage files' lookups are kept for the process's next calls
    (``lookup``: a :class:`StageLookup` of the caller's own instead of the shared one).
    """
    texts = [query] if isinstance(query, str) else list(query)
    layout = Layout.at(home)
    which = collection(collection_name)
    index = _index(layout, which)
    model, _ = index.model(partitions)
    first = index.manifest((partitions or index.partitions())[0])
    vectors = embed_query(texts, which, model, embedder, clip, first.provenance)
    hits = index.search(vectors, k, model=model, exact=exact, partitions=partitions, expansion=expansion)
    hits = hits.drop(columns=["row"])
    if with_stage:
        hits = describe_hits(open_storage(storage_root(layout)), hits, which, lookup)
    else:
        hits = hits.rename(columns={"partition": "source"})
    hits.insert(0, "query", [texts[i] for i in hits.pop("query")])
    return hits.reset_index(drop=True)


def unindexed(home: str | os.PathLike | None, collection_name: str = "documents") -> list[str]:
    """Partitions with embeddings in storage that the index does not hold (to warn about)."""
    layout = Layout.at(home)
    which = collection(collection_name)
    indexed = set(VectorIndex.at(layout, which).partitions())
    stored = open_storage(storage_root(layout)).partitions(
        which.asset
    )  # the root $REFINERY_STORAGE_ROOT names
    return sorted(p for p in stored if p not in indexed)
