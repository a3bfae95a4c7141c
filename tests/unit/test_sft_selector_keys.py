"""sft_selected embeds each record's documented key (``dedup_text``), not its first user turn:
conversations that open with the same greeting get different embeddings. Real reader, real
MiniLM embedder on the CPU."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.models.embedder import load_embedder
from refinery.sft.reader import SftIngestParams, SftReader
from refinery.sft.schema import KEY_COLUMN, SFT_SCHEMA
from refinery.sft.select import SelectionParams
from refinery.sft.selector import SftSelector
from refinery.storage import Storage

GREETING = "Hi there, can you help me with a question?"
QUESTIONS = [
    (
        "How do I repot a root-bound fig tree without killing it?",
        "Water it the day before, then tease the roots.",
    ),
    (
        "Which constellations are easiest to find in the winter sky?",
        "Orion first: its belt points to Sirius.",
    ),
    (
        "What is a good way to learn Rust if I already know Python?",
        "Work through the Rust book with small tools.",
    ),
    (
        "How much salt should go into a litre of pasta water?",
        "About ten grams: it should taste like mild broth.",
    ),
]


def test_selector_embeds_the_record_key_not_the_greeting(tmp_path):
    folder = tmp_path / "inbox" / "chat"
    folder.mkdir(parents=True)
    records = [
        {
            "id": f"sg-{i}",
            "conversations": [
                {"from": "human", "value": GREETING},
                {"from": "gpt", "value": "Of course! What would you like to know?"},
                {"from": "human", "value": q},
                {"from": "gpt", "value": a},
            ],
        }
        for i, (q, a) in enumerate(QUESTIONS)
    ]
    (folder / "sharegpt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    docs = [d for b in SftReader(folder, "chat", SftIngestParams()).batches() for d in b.documents]
    storage = Storage(tmp_path / "storage")
    storage.path("sft_checked", "chat").parent.mkdir(parents=True)
    table = pa.Table.from_pandas(pd.DataFrame(docs, columns=SFT_SCHEMA.names), schema=SFT_SCHEMA)
    pq.write_table(table, storage.path("sft_checked", "chat"))

    embedder = load_embedder(device="cpu")
    selector = SftSelector.planned(
        storage, "sft_checked", "chat", SelectionParams(budget_count=2, n_clusters=2), embedder
    )
    keys = [d[KEY_COLUMN] for d in docs]
    assert keys[0] == f"{GREETING}\n\n{QUESTIONS[0][0]}"
    np.testing.assert_allclose(selector.embeddings, embedder.encode(keys), atol=1e-5)
    first_turns = embedder.encode([d["prompt"] for d in docs])
    assert np.allclose(first_turns, first_turns[0], atol=1e-5)  # what the old selector clustered: one point
    cosines = selector.embeddings @ selector.embeddings.T
    assert cosines[np.triu_indices(len(docs), 1)].max() < 0.9  # the records are told apart
    report = selector.report()
    assert report["embedded_column"] == KEY_COLUMN
    batch = storage.read("sft_checked", "chat")
    result = selector(batch)
    assert len(result.kept) == 2 and set(result.rejected["reason"]) == {"not_selected"}
