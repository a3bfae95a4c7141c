"""Train / validation / test splits that keep every near-duplicate cluster in one split.

A split by hash of the id alone is deterministic but leaks: a near copy of a test document in
train inflates test scores. So documents are first grouped, by union-find over every
"same document" relation we know of, and the *group* is hashed:

- the dedup stages' decisions: each row that ``exact_deduplicated`` or ``fuzzy_deduplicated``
  rejected names the kept document in ``duplicate_of``;
- a second near-duplicate pass over the corpus at a lower Jaccard threshold (0.5 by default,
  under the dedup's 0.8): documents the dedup rightly kept as distinct can still share most of
  their text; candidates come from MinHash-LSH banded for a threshold below the verification
  threshold (fewer misses) and every pair is verified by estimated Jaccard;
- identical ``content_hash`` values among kept documents (none after exact dedup, unless the
  index was reset between partitions).

A group's split is decided by a salted hash of its smallest member key, so it is stable as long
as the group's membership is. The leakage check does not trust the construction: it counts
edges whose ends landed in different splits, and compares a sample of held-out documents with
every training document by brute force over their signatures.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator

from refinery.dedup.minhash import MinHasher, jaccard
from refinery.ids import doc_key
from refinery.mixing.corpus import iter_corpus
from refinery.names import TEXT_DEDUP_STAGES
from refinery.storage import Storage

_MIX = np.uint64(0x9E3779B97F4A7C15)


class SplitParams(BaseModel):
    fractions: dict[str, float] = Field(
        {"train": 0.8, "validation": 0.1, "test": 0.1}, description="Split names and shares (sum to 1)."
    )
    salt: str = Field("refinery-splits-1", description="Changing it reshuffles every document.")
    near_dup_threshold: float | None = Field(
        0.5, description="Jaccard above which kept documents are grouped too (None: dedup decisions only)."
    )
    num_perm: int = Field(128, description="MinHash permutations of the near-duplicate pass.")
    ngram: int = Field(5, description="Words per shingle (as the dedup stage).")
    leakage_sample: int = Field(
        500, description="Held-out documents compared with all of train by brute force."
    )
    seed: int = Field(1, description="Seeds the permutations and the leakage sample.")

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, value: dict[str, float]) -> dict[str, float]:
        if not value or any(v < 0 for v in value.values()) or abs(sum(value.values()) - 1) > 1e-6:
            raise ValueError(f"split fractions must be ≥ 0 and sum to 1, got {value}")
        return value


class UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def split_of(key: str, salt: str, fractions: dict[str, float]) -> str:
    """The split a group key hashes to: uniform in [0, 1) against cumulative fractions."""
    digest = hashlib.blake2b(f"{salt}\0{key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    acc = 0.0
    names = list(fractions)
    for name in names:
        acc += fractions[name]
        if u < acc:
            return name
    return names[-1]


def _band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: one hash per band of each signature."""
    sig = signatures[:, : bands * rows].astype(np.uint64).reshape(len(signatures), bands, rows)
    acc = np.zeros((len(signatures), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(rows):
            acc = (acc ^ sig[:, :, r]) * _MIX + np.uint64(r + 1)
    return acc


def near_duplicate_pairs(
    signatures: np.ndarray, threshold: float, num_perm: int
) -> list[tuple[int, int, float]]:
    """Verified pairs (i, j, Jaccard ≥ threshold) among signatures. The bands are chosen to miss
    few true pairs (datasketch's optimum with false negatives weighted 0.95: with 128 permutations
    at threshold 0.5, a pair at 0.55 is a candidate with probability 0.99) at the cost of more
    candidates to verify. Within a large bucket, members are compared with every earlier member
    up to 64 back (enough to connect a cluster through union-find)."""
    if len(signatures) < 2:
        return []
    from datasketch import MinHashLSH  # on use: datasketch imports scipy (seconds at start-up)

    probe = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.05, 0.95))
    bands, rows = probe.b, probe.r
    keys = _band_keys(signatures, bands, rows)
    seen: set[tuple[int, int]] = set()
    pairs = []
    for b in range(bands):
        order = np.argsort(keys[:, b], kind="stable")
        sorted_keys = keys[order, b]
        starts = np.flatnonzero(np.diff(sorted_keys, prepend=sorted_keys[0] ^ np.uint64(1)))
        ends = np.append(starts[1:], len(order))
        for lo, hi in zip(starts[ends - starts > 1], ends[ends - starts > 1], strict=True):
            members = np.sort(order[lo:hi])
            for x in range(1, len(members)):
                for y in range(max(0, x - 64), x):
                    i, j = int(members[y]), int(members[x])
                    if (i, j) in seen:
                        continue
                    seen.add((i, j))
                    sim = jaccard(signatures[i], signatures[j])
                    if sim >= threshold:
                        pairs.append((i, j, sim))
    return pairs


@dataclass
class SplitResult:
    assignment: pd.DataFrame  # source, id, domain, tokens, split, group, group_size
    edges: dict[str, int]  # edges found per kind
    crossing_edges: int
    leakage_checked: int
    leakage_found: int
    leak_examples: list[tuple[str, str, float]] = field(default_factory=list)

    def sizes(self) -> pd.DataFrame:
        a = self.assignment
        out = a.groupby("split").agg(
            documents=("id", "size"), tokens=("tokens", "sum"), groups=("group", "nunique")
        )
        out["share_of_documents"] = out["documents"] / max(len(a), 1)
        return out.reset_index()


def _dedup_edges(storage: Storage, keys: dict[str, int]) -> tuple[list[tuple[int, int]], list[str]]:
    """Edges from the dedup stages' rejected rows; rejected documents become extra nodes."""
    extra: list[str] = []
    edges: list[tuple[int, int]] = []

    def node(key: str) -> int:
        if key not in keys:
            keys[key] = len(keys)
            extra.append(key)
        return keys[key]

    for stage in TEXT_DEDUP_STAGES:
        for source in storage.partitions(stage):
            rejected = storage.read(stage, source, rejected=True)
            if not len(rejected) or "duplicate_of" not in rejected.columns:
                continue
            for doc_id, target in zip(rejected["id"], rejected["duplicate_of"], strict=True):
                if isinstance(target, str) and target:
                    edges.append((node(doc_key(source, doc_id)), node(target)))
    return edges, extra


def assign_splits(storage: Storage, params: SplitParams, domain_column: str | None = None) -> SplitResult:
    frames, texts_sigs = [], []
    hasher = MinHasher(params.num_perm, params.ngram, params.seed)
    want_lsh = params.near_dup_threshold is not None
    for batch in iter_corpus(storage, columns=["content_hash"], domain_column=domain_column):
        f = batch.frame
        frames.append(
            pd.DataFrame(
                {
                    "source": batch.source,
                    "id": f["id"].astype(str),
                    "domain": f["domain"].astype(str),
                    "tokens": f["tokens"],
                    "content_hash": f["content_hash"],
                }
            )
        )
        if want_lsh:
            texts_sigs.append(hasher.signatures(f["text"].tolist()))
    docs = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["source", "id", "domain", "tokens", "content_hash"])
    )
    n = len(docs)
    keys = {doc_key(s, i): k for k, (s, i) in enumerate(zip(docs["source"], docs["id"], strict=True))}
    dedup_edges, extra = _dedup_edges(storage, keys)
    edges = {"dedup_decisions": len(dedup_edges)}
    all_edges = list(dedup_edges)
    hashes = docs["content_hash"].dropna()
    hash_edges = []
    if len(hashes):
        first = {}
        for idx, h in hashes.items():
            if h in first:
                hash_edges.append((first[h], int(idx)))
            else:
                first[h] = int(idx)
    edges["same_content_hash"] = len(hash_edges)
    all_edges += hash_edges
    signatures = np.concatenate(texts_sigs) if texts_sigs else np.zeros((0, params.num_perm), np.uint32)
    near = near_duplicate_pairs(signatures, params.near_dup_threshold, params.num_perm) if want_lsh else []
    edges["near_duplicates"] = len(near)
    all_edges += [(i, j) for i, j, _ in near]

    uf = UnionFind(n + len(extra))
    for a, b in all_edges:
        uf.union(a, b)
    names = list(keys)  # insertion order = node index
    roots = uf.roots()
    # The group key: the smallest member key (stable under reordering of sources).
    group_key: dict[int, str] = {}
    for idx, root in enumerate(roots):
        key = names[idx]
        if root not in group_key or key < group_key[root]:
            group_key[root] = key
    groups = np.array([group_key[r] for r in roots[:n]], dtype=object)
    # Every group gets a split, also groups made only of documents that left the corpus after
    # dedup (their kept copy was later removed by a quality stage): edges still reach them.
    split_by_group = {g: split_of(g, params.salt, params.fractions) for g in set(group_key.values())}
    docs = docs.drop(columns=["content_hash"]).assign(split=[split_by_group[g] for g in groups], group=groups)
    docs["group_size"] = docs.groupby("group")["id"].transform("size").astype(np.int64)

    # -- the leakage check, from the result rather than the construction ----------------------
    split_of_node = {i: split_by_group[group_key[roots[i]]] for i in range(n + len(extra))}
    crossing = sum(split_of_node[a] != split_of_node[b] for a, b in all_edges)
    checked, found, examples = 0, 0, []
    if want_lsh and n:
        train = np.flatnonzero(docs["split"].to_numpy() == "train")
        held = np.flatnonzero(docs["split"].to_numpy() != "train")
        rng = np.random.default_rng(params.seed)
        sample = (
            rng.choice(held, size=min(len(held), params.leakage_sample), replace=False) if len(held) else held
        )
        train_sigs = signatures[train]
        for i in sample:
            sims = (train_sigs == signatures[i]).mean(axis=1) if len(train) else np.zeros(0)
            hits = np.flatnonzero(sims >= params.near_dup_threshold)
            checked += 1
            if len(hits):
                found += 1
                j = train[hits[np.argmax(sims[hits])]]
                examples.append((names[i], names[j], float(sims[hits].max())))
    return SplitResult(docs, edges, int(crossing), checked, found, examples[:10])
