"""The tokenizer every token asset shares: trained here (byte-level BPE) or loaded from a path.

Training uses Hugging Face ``tokenizers`` on a seeded sample of ``pretrain_corpus`` (every
source, in proportion to its size), holding out a few documents per source on which bytes per
token are measured. Loading takes a ``tokenizer.json`` file or a local Hugging Face tokenizer
folder (one holding ``tokenizer.json``); nothing is ever downloaded.

Either way the result is one file, ``storage/tokenizer/tokenizer.json``, and its identity is the
digest of that file: ``tokenized_corpus`` stamps it into every partition and ``training_tokens``
into every shard index, so a mismatch is refused before anything is written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field, model_validator

from refinery.metadata import FilePath, Json, Markdown, Published
from refinery.names import PRETRAIN_CORPUS, TOKENIZER
from refinery.storage import Storage
from refinery.table_store import AnyStorage, file_path, local_scratch, put_file, read_bytes, shown

TOKENIZER_FILE = "tokenizer.json"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
# Token id dtypes Megatron's IndexedDataset can hold (its DType enum has no uint32).
DTYPE_LIMITS = {"uint16": 2**16, "int32": 2**31}


class TokenizerError(ValueError):
    """A tokenizer that cannot serve the corpus: missing, without its EOS, or too large."""


class TokenizerParams(BaseModel):
    """tokenizer's parameters: train a byte-level BPE on a corpus sample, or load one by path."""

    mode: Literal["train", "load"] = Field("train", description="Train a byte-level BPE, or load `path`.")
    path: str | None = Field(
        None, description="load: a tokenizer.json file or a local Hugging Face tokenizer folder."
    )
    vocab_size: int = Field(4_096, description="train: vocabulary size, special tokens included.")
    min_frequency: int = Field(2, description="train: pairs seen fewer times are not merged.")
    special_tokens: list[str] = Field(
        [EOS_TOKEN, PAD_TOKEN], description="train: special tokens, added first (ids 0, 1, …)."
    )
    eos_token: str = Field(EOS_TOKEN, description="The token appended to every document.")
    pad_token: str | None = Field(
        PAD_TOKEN, description="Fills the last packed sequence (loss-masked); None: the EOS id."
    )
    sample_documents: int = Field(20_000, description="train: documents sampled from pretrain_corpus.")
    held_out_per_source: int = Field(
        20, description="Documents per source kept out of training, on which bytes per token are measured."
    )
    seed: int = Field(0, description="Seeds the sample.")

    @model_validator(mode="after")
    def _ranges(self) -> TokenizerParams:
        if self.mode == "load" and not self.path:
            raise ValueError("mode='load' needs path (a tokenizer.json or a local tokenizer folder)")
        if self.vocab_size < 257 + len(self.special_tokens):
            raise ValueError("vocab_size must leave room for the 256 bytes and the special tokens")
        if self.eos_token not in self.special_tokens and self.mode == "train":
            raise ValueError(f"eos_token {self.eos_token!r} must be one of special_tokens")
        return self


def tokenizer_path(storage: AnyStorage) -> Path | str:
    """Where the tokenizer asset keeps its file: a local path, or a path on the object store."""
    return file_path(storage, TOKENIZER, TOKENIZER_FILE)


def digest_of(path: Path) -> str:
    """A tokenizer's identity: the digest of its ``tokenizer.json``."""
    return digest_bytes(path.read_bytes())


def digest_bytes(content: bytes) -> str:
    return hashlib.blake2b(content, digest_size=12).hexdigest()


def resolve_user_tokenizer(path: str | Path) -> Path:
    """The ``tokenizer.json`` of a user's file or local folder; a clear error otherwise."""
    given = Path(path).expanduser()
    candidate = given / TOKENIZER_FILE if given.is_dir() else given
    if not candidate.is_file():
        hint = (
            " (a folder must hold tokenizer.json; nothing is downloaded)"
            if given.is_dir() or not given.exists()
            else ""
        )
        raise TokenizerError(f"no tokenizer at {candidate}{hint}")
    return candidate


def load(path: str | Path):
    """A ``tokenizers.Tokenizer`` from a tokenizer.json file or a folder holding one."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(resolve_user_tokenizer(path)))


def special_ids(tokenizer, eos_token: str, pad_token: str | None) -> tuple[int, int]:
    """(eos id, pad id): both must be in the vocabulary; the pad falls back to the EOS."""
    eos = tokenizer.token_to_id(eos_token)
    if eos is None:
        raise TokenizerError(f"the tokenizer has no EOS token {eos_token!r}: set eos_token to one it has")
    pad = tokenizer.token_to_id(pad_token) if pad_token else eos
    if pad is None:
        raise TokenizerError(
            f"the tokenizer has no pad token {pad_token!r}: set pad_token to null or one it has"
        )
    return eos, pad


def dtype_for(vocab_size: int, choice: str = "auto") -> str:
    """The token dtype of the shards: the smallest that holds the vocabulary, or the one chosen
    (refused, before anything is written, when the vocabulary does not fit)."""
    if choice == "auto":
        return "uint16" if vocab_size <= DTYPE_LIMITS["uint16"] else "int32"
    if choice not in DTYPE_LIMITS:
        raise TokenizerError(f"dtype must be auto, uint16 or int32, got {choice!r}")
    if vocab_size > DTYPE_LIMITS[choice]:
        raise TokenizerError(
            f"the vocabulary has {vocab_size} tokens, too many for dtype {choice} "
            f"(at most {DTYPE_LIMITS[choice]}): choose int32 or auto"
        )
    return choice


SAMPLE_COLUMNS = ["source", "id", "text"]


def sample_corpus(storage: Storage, params: TokenizerParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training sample, held-out documents): a seeded share of every source, ``held_out_per_source``
    documents of each kept apart. The positions are drawn from the row counts and the partitions are
    streamed a batch at a time, so only the sampled rows are held (never a whole source's text)."""
    sources = storage.partitions(PRETRAIN_CORPUS)
    if not sources:
        raise TokenizerError("pretrain_corpus has no partitions: materialize the text pipeline first")
    counts = {s: storage.row_count(PRETRAIN_CORPUS, s) for s in sources}
    total = max(sum(counts.values()), 1)
    rng = np.random.default_rng(params.seed)
    train_parts, held_parts = [], []
    for source in sources:
        rows = counts[source]
        order = rng.permutation(rows)
        held = min(params.held_out_per_source, rows // 2)
        share = max(1, round(params.sample_documents * rows / total)) if rows else 0
        picked = rows_at(storage, source, order[: held + share])
        held_parts.append(picked.iloc[:held])
        train_parts.append(picked.iloc[held : held + share])
    return pd.concat(train_parts, ignore_index=True), pd.concat(held_parts, ignore_index=True)


def rows_at(storage: Storage, source: str, positions: np.ndarray) -> pd.DataFrame:
    """``pretrain_corpus[source]``'s rows at ``positions`` (reading positions, distinct), in that
    order, read one batch at a time."""
    wanted = np.sort(positions)
    taken, start = [], 0
    for batch in storage.iter_batches(PRETRAIN_CORPUS, source, columns=SAMPLE_COLUMNS):
        lo, hi = np.searchsorted(wanted, [start, start + len(batch)])
        if hi > lo:
            taken.append(batch.iloc[wanted[lo:hi] - start])
        start += len(batch)
    if len(wanted) and wanted[-1] >= start:
        raise TokenizerError(f"pretrain_corpus[{source}] has {start} rows where its count said more: rerun")
    found = pd.concat(taken, ignore_index=True) if taken else pd.DataFrame(columns=SAMPLE_COLUMNS)
    return found.iloc[np.searchsorted(wanted, positions)].reset_index(drop=True)


def train_bpe(texts: list[str], params: TokenizerParams):
    """A byte-level BPE (GPT-2 style: lossless on any UTF-8, no unknown token) trained on texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=params.vocab_size,
        min_frequency=params.min_frequency,
        special_tokens=list(params.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tokenizer


def bytes_per_token(tokenizer, held: pd.DataFrame) -> pd.DataFrame:
    """Per source: held-out documents, their UTF-8 bytes and tokens, and bytes per token."""
    rows = []
    for source, part in held.groupby("source", sort=True):
        texts = part["text"].tolist()
        tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))
        nbytes = sum(len(t.encode("utf-8")) for t in texts)
        rows.append((source, len(texts), nbytes, tokens, nbytes / tokens if tokens else float("nan")))
    return pd.DataFrame(rows, columns=["source", "held_out_documents", "bytes", "tokens", "bytes_per_token"])


def publish_tokenizer(storage: Storage, params: TokenizerParams, stamp: dict) -> Published:
    """Train or load the tokenizer, write ``tokenizer.json`` and the held-out table."""
    train, held = sample_corpus(storage, params)
    if params.mode == "train":
        tokenizer = train_bpe(train["text"].tolist(), params)
        origin = f"byte-level BPE trained on {len(train)} documents"
    else:
        source = resolve_user_tokenizer(params.path)
        tokenizer = load(source)
        origin = f"loaded from {source}"
    eos, pad = special_ids(tokenizer, params.eos_token, params.pad_token)
    staging = local_scratch(storage, TOKENIZER, TOKENIZER_FILE)
    tokenizer.save(str(staging))
    digest = digest_of(staging)
    target = put_file(storage, TOKENIZER, staging, TOKENIZER_FILE)  # before the table that names it
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    table = bytes_per_token(tokenizer, held)
    info = {
        "digest": digest,
        "vocab_size": vocab,
        "eos_id": eos,
        "pad_id": pad,
        "eos_token": params.eos_token,
        "origin": origin,
    }
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    storage.write_table(TOKENIZER, arrow, stamp | info)
    sample = train.groupby("source").size().to_dict() if params.mode == "train" else {}
    meta = {
        "vocab_size": vocab,
        "digest": digest,
        "eos_id": eos,
        "pad_id": pad,
        "origin": origin,
        "trained_on_documents": Json({k: int(v) for k, v in sample.items()}),
        "trained_on_bytes": int(sum(len(t.encode("utf-8")) for t in train["text"])) if sample else 0,
        "bytes_per_token": Markdown(_markdown(table)),
        "mean_bytes_per_token": round(float(table["bytes"].sum() / max(table["tokens"].sum(), 1)), 3),
        "tokenizer": FilePath.of(shown(storage, target)),
        "parameters": Json(params.model_dump()),
    }
    line = f"tokenizer {digest}: {vocab} tokens, {origin}"
    return Published(meta, [], info=[line], schema=arrow.schema, rows=len(table))


def _markdown(table: pd.DataFrame) -> str:
    from refinery import markdown

    if not len(table):
        return "_no held-out documents_"
    return markdown.table(list(table.columns), table.round(3).itertuples(index=False))


def stored_info(storage: AnyStorage) -> dict:
    """The tokenizer asset's identity (digest, vocab_size, eos_id, pad_id), checked against its file."""
    return _stored(storage)[0]


def load_stored(storage: AnyStorage):
    """The tokenizer asset's ``tokenizers.Tokenizer``, read through the storage root's filesystem."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(_stored(storage)[1].decode())


def _stored(storage: AnyStorage) -> tuple[dict, bytes]:
    path = shown(storage, tokenizer_path(storage))
    content = read_bytes(storage, TOKENIZER, TOKENIZER_FILE)
    if content is None:
        raise TokenizerError(f"no tokenizer at {path}: materialize the tokenizer asset first")
    info = storage.table_provenance(TOKENIZER)
    if info.get("digest") != digest_bytes(content):
        raise TokenizerError(f"{path} changed since the tokenizer asset wrote it: re-materialize tokenizer")
    return info, content
