"""A small home for the token tests: pretrain_corpus partitions of generated prose (plus a few
non-ASCII documents), a training_schedule manifest with a repeated document and a validation
split, the tokenizer and tokenized_corpus made by the real library code."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.engine.local import LocalEngine
from refinery.kernel.execute import execute_stage
from refinery.kernel.report import provenance
from refinery.kernel.spec import StageContext
from refinery.names import PRETRAIN_CORPUS, TOKENIZED_CORPUS, TRAINING_SCHEDULE
from refinery.paths import Layout
from refinery.sample import prose
from refinery.schedule.publish import MANIFEST_COLUMNS, MANIFEST_DTYPES
from refinery.storage import Storage
from refinery.tokens.stage import TOKENIZED_CORPUS as SPEC
from refinery.tokens.stage import make_document_tokenizer
from refinery.tokens.tokenize import TokenizeParams
from refinery.tokens.tokenizer import TokenizerParams, publish_tokenizer

SOURCES = {"web": 18, "books": 10}
UNICODE = [
    "Crème brûlée — naïve café façade.",
    "数据 流水线 把 文本 变成 令牌。",
    "Emoji 🙂 and ümlauts: Größe.",
]


def corpus_texts(seed: int = 3) -> dict[str, list[str]]:
    rng = random.Random(seed)
    texts = {
        s: [prose.article(rng, paragraphs=rng.randint(1, 4)) for _ in range(n)] for s, n in SOURCES.items()
    }
    texts["books"] += UNICODE
    return texts


def write_corpus(layout: Layout, texts: dict[str, list[str]]) -> Storage:
    storage = Storage(layout.storage)
    for source, docs in texts.items():
        path = storage.path(PRETRAIN_CORPUS, source)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {
                "id": [f"{source}-{i}" for i in range(len(docs))],
                "text": pa.array(docs, pa.large_string()),
                "source": [source] * len(docs),
                "file": ["docs.jsonl"] * len(docs),
                "line": np.arange(1, len(docs) + 1, dtype=np.int64),
                "quality_score": np.linspace(0.5, 0.9, len(docs)),
            }
        )
        pq.write_table(table, path)
    return storage


def write_manifest(
    storage: Storage, texts: dict[str, list[str]], docs_per_step: int = 4, seed: int = 0
) -> pa.Table:
    """Train: every document in a seeded order, and web-0 a second time (epoch 1) at the end;
    validation: three documents."""
    rng = np.random.default_rng(seed)
    keys = [(s, f"{s}-{i}") for s, docs in texts.items() for i in range(len(docs))]
    held = keys[:3]
    train = [keys[i] for i in rng.permutation(len(keys)) if keys[i] not in held] + [("web", "web-0")]
    rows = []
    for split, docs in (("train", train), ("validation", held)):
        for p, (s, i) in enumerate(docs):
            epoch = 1 if split == "train" and p == len(docs) - 1 else 0
            rows.append((split, p, p // docs_per_step, 0, 0, s, s, i, epoch, False, 1, float("nan")))
    frame = __import__("pandas").DataFrame(rows, columns=MANIFEST_COLUMNS).astype(MANIFEST_DTYPES)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    storage.write_table(TRAINING_SCHEDULE, table, {"asset": TRAINING_SCHEDULE})
    return table


def make_tokenizer(storage: Storage, **params) -> dict:
    config = TokenizerParams(**({"vocab_size": 600, "held_out_per_source": 2} | params))
    return publish_tokenizer(storage, config, provenance("tokenizer", "all", config)).metadata


def tokenize(layout: Layout, storage: Storage, sources, **params) -> dict:
    config = TokenizeParams(**params)
    outcomes = {}
    for source in sources:
        ctx = StageContext(
            SPEC,
            source,
            config,
            layout,
            storage,
            LocalEngine(),
            provenance=provenance(TOKENIZED_CORPUS, source, config),
        )
        outcomes[source] = execute_stage(ctx, make_document_tokenizer)
    return outcomes


def build_home(root, **tokenize_params) -> tuple[Layout, Storage, dict[str, list[str]]]:
    layout = Layout.at(root / "home")
    texts = corpus_texts()
    storage = write_corpus(layout, texts)
    write_manifest(storage, texts)
    make_tokenizer(storage)
    tokenize(layout, storage, sorted(texts), **tokenize_params)
    return layout, storage, texts
