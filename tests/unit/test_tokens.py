"""Packed token shards: both formats give back the documents' exact bytes across shard boundaries,
Megatron's own reader opens them, and the loader delivers every token exactly once under two
ranks and after a resume."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from refinery.tokens.loader import TokenLoaderError, TokenReader, TokenShards, read_index
from refinery.tokens.megatron import MegatronShard
from refinery.tokens.publish import TrainingTokensParams, publish_training_tokens
from refinery.tokens.tokenizer import load, tokenizer_path
from tests.unit.token_helpers import build_home

PARAMS = TrainingTokensParams(
    seq_len=63, micro_batch_size=2, data_parallel_size=2, shard_sequences=5, chunk_sequences=3
)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    layout, storage, texts = build_home(tmp_path_factory.mktemp("tokens"))
    published = publish_training_tokens(storage, PARAMS, {"asset": "training_tokens"})
    assert published.checks[0].passed
    root = storage.table_path("training_tokens").parent
    lineage = pq.read_table(root / "training_tokens.parquet").to_pandas()
    return layout, storage, texts, root, lineage


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte ↔ unicode table, inverted: a byte-level BPE token string to its bytes."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def token_bytes(tokenizer, ids, decoder, eos) -> list[bytes]:
    return [b"" if i == eos else bytes(decoder[ch] for ch in tokenizer.id_to_token(int(i))) for i in ids]


def text_of(storage, texts, source, doc_id) -> bytes:
    return texts[source][int(doc_id.rsplit("-", 1)[1])].encode("utf-8")


def test_megatron_pieces_are_the_documents_exact_bytes_across_shards(home):
    _, storage, texts, root, lineage = home
    tokenizer = load(tokenizer_path(storage))
    eos = tokenizer.token_to_id("<|endoftext|>")
    decoder = byte_decoder()
    index = read_index(root)
    seen_docs = 0
    for split in ("train", "validation"):
        shards = TokenShards(root, split, index)
        assert len(shards.shards) > 2  # several shard files: pieces cross their boundaries
        rows = shards.take(np.arange(len(shards)))
        part = lineage[lineage["split"] == split]
        for (_, _), doc in part.groupby(["position", "epoch"], sort=False):
            source, doc_id = doc["source"].iloc[0], doc["id"].iloc[0]
            whole = text_of(storage, texts, source, doc_id)
            got = b""
            byte_at = 0
            for piece in doc.sort_values("doc_start").itertuples():
                ids = rows[piece.sequence, piece.offset : piece.offset + piece.length]
                chunk = b"".join(token_bytes(tokenizer, ids, decoder, eos))
                assert chunk == whole[byte_at : byte_at + len(chunk)]  # this piece is this span of the text
                byte_at += len(chunk)
                got += chunk
            assert got == whole and ids[-1] == eos  # all of it, then its EOS
            seen_docs += 1
        # every real token is in a piece, the rest of the last sequence is padding
        covered = np.zeros(rows.size, bool)
        for piece in part.itertuples():
            start = piece.sequence * rows.shape[1] + piece.offset
            assert not covered[start : start + piece.length].any()
            covered[start : start + piece.length] = True
        assert covered.sum() == index["splits"][split]["tokens"] and covered[: covered.sum()].all()
        assert (rows.reshape(-1)[~covered] == index["pad_id"]).all()
    assert seen_docs == 29 + 3  # train (one document twice, epochs 0 and 1) and validation


def test_litdata_blocks_are_the_megatron_sequences(home):
    from litdata import StreamingDataset
    from litdata.streaming.item_loader import TokensLoader

    _, _, _, root, _ = home
    index = read_index(root)
    for split in ("train", "validation"):
        shards = TokenShards(root, split, index)
        data = StreamingDataset(
            str(root / "shards" / split / "litdata"), item_loader=TokensLoader(block_size=64), shuffle=False
        )
        assert len(data) == len(shards)
        blocks = np.stack([np.asarray(data[i]) for i in range(len(data))])
        assert np.array_equal(blocks, shards.take(np.arange(len(shards))))


def test_megatron_core_indexed_dataset_opens_the_shards(home):
    indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    _, _, _, root, _ = home
    index = read_index(root)
    for shard in index["splits"]["train"]["megatron"]:
        prefix = str(root / "shards" / shard["prefix"])
        theirs = indexed.IndexedDataset(prefix)
        ours = MegatronShard(prefix)
        assert len(theirs) == len(ours) == shard["sequences"]
        assert list(theirs.document_indices) == list(range(len(ours) + 1))
        for i in range(len(ours)):
            assert np.array_equal(theirs[i], ours[i]) and theirs[i].dtype == np.uint16


def rank_stream(root, rank, ranks, workers=2, start_step=0):
    """What a DataLoader (batch_size=None) yields to one rank: its workers' batches round robin."""
    per_worker = [
        list(TokenReader(root, "train", rank, ranks, start_step=start_step, worker=w, num_workers=workers))
        for w in range(workers)
    ]
    out = []
    for j in range(max(len(b) for b in per_worker)):
        out += [b[j] for b in per_worker if j < len(b)]
    return out


def test_every_token_exactly_once_under_two_ranks_and_after_resume(home):
    _, storage, texts, root, lineage = home
    index = read_index(root)
    shards = TokenShards(root, "train", index)
    n = len(shards)
    assert n % index["sequences_per_step"]  # a short last step: the pad case is exercised
    delivered = []
    counts = []
    for rank in range(2):
        batches = rank_stream(root, rank, 2)
        counts.append(len(batches))
        whole = list(TokenReader(root, "train", rank, 2))
        assert [b["sequence"].tolist() for b in batches] == [b["sequence"].tolist() for b in whole]
        for b in batches:
            for seq, pad, inputs in zip(b["sequence"], b["is_pad"], b["input_ids"], strict=True):
                if pad:
                    assert (b["labels"][list(b["sequence"]).index(seq)] == -100).all()
                else:
                    delivered.append(int(seq))
                    assert np.array_equal(inputs, shards.take(np.array([seq]))[0, :-1])
        # resume at step 3: exactly the tail of the uninterrupted stream
        resumed = list(TokenReader(root, "train", rank, 2, start_step=3))
        tail = [b for b in whole if b["step"].min() >= 3]
        assert [b["sequence"].tolist() for b in resumed] == [b["sequence"].tolist() for b in tail]
    assert counts[0] == counts[1]  # no rank waits in a collective the other never joins
    assert sorted(delivered) == list(range(n))
    # token level: the delivered sequences, in sequence order, are the schedule's documents back to back
    stream = shards.take(np.arange(n)).reshape(-1)[: index["splits"]["train"]["tokens"]]
    tokenizer = load(tokenizer_path(storage))
    eos = tokenizer.token_to_id("<|endoftext|>")
    order = lineage[lineage["split"] == "train"].drop_duplicates(["position"]).sort_values("position")
    expected = []
    for source, doc_id in zip(order["source"], order["id"], strict=True):
        text = texts[source][int(doc_id.rsplit("-", 1)[1])]
        expected += [*tokenizer.encode(text, add_special_tokens=False).ids, eos]
    assert stream.tolist() == expected


def test_labels_and_document_mask(home):
    _, _, _, root, _ = home
    eos = read_index(root)["eos_id"]
    for batch in TokenReader(root, "train", 0, 1, batch_size=8):
        ids, labels, segments = batch["input_ids"], batch["labels"], batch["document_ids"]
        for row in range(len(ids)):
            ends = np.flatnonzero(ids[row] == eos)
            for e in ends:  # an EOS never predicts the next document's first token
                assert labels[row, e] == -100
                if e + 1 < ids.shape[1] and segments[row, e + 1] >= 0:
                    assert (
                        segments[row, e + 1] == segments[row, e] + 1
                        and batch["position_ids"][row, e + 1] == 0
                    )
            inside = (labels[row] != -100) & (ids[row] != eos)
            assert (segments[row][inside] >= 0).all()


def test_torch_dataset_and_refusals(home):
    torch = pytest.importorskip("torch")
    from refinery.tokens.dataset import TokenDataset

    _, _, _, root, _ = home
    ds = TokenDataset(root, rank=1, world_size=2)
    batches = list(ds.loader(num_workers=0))
    assert len(batches) == len(ds) and batches[0]["input_ids"].dtype == torch.int64
    assert batches[0]["input_ids"].shape == (2, 63)
    with pytest.raises(TokenLoaderError, match="not divisible by world_size 3"):
        TokenReader(root, "train", 0, 3)
    with pytest.raises(TokenLoaderError, match="tokenized with tokenizer"):
        TokenReader(root, "train", tokenizer_digest="0" * 24)


def test_the_tiling_check_catches_a_lost_piece(home, tmp_path):
    from refinery.tokens.lineage import check_tiling

    _, _, _, root, _ = home
    splits = read_index(root)["splits"]
    path = root / "training_tokens.parquet"
    assert check_tiling(path, splits, 64) == []
    table = pq.read_table(path)
    broken = tmp_path / "broken.parquet"
    pq.write_table(table.take([*range(10), *range(11, table.num_rows)]), broken)  # one piece lost
    tokens = splits["train"]["tokens"]
    assert check_tiling(broken, splits, 64) == [
        f"train: the lineage pieces do not tile the {tokens} tokens in order"
    ]
