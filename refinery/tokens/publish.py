"""training_tokens end to end: check, pack, write both formats and the lineage, verify.

Reads the ``training_schedule`` manifest (every split, in order) and each document's tokens from
``tokenized_corpus``, packs them (:mod:`refinery.tokens.packing`) and writes, per split::

    storage/training_tokens/shards/index.json                 what a loader checks first
    storage/training_tokens/shards/<split>/megatron/shard-NNNNN.{bin,idx}
    storage/training_tokens/shards/<split>/litdata/{index.json,chunk-*.bin}
    storage/training_tokens/training_tokens.parquet           the lineage table (every split)

Before anything is written: every source's ``tokenized_corpus`` must have been made with the
current tokenizer (same digest), and the vocabulary must fit the chosen dtype. Scheduled
documents that have no tokens (rejected by ``tokenized_corpus``, e.g. empty after tokenization)
are counted by reason in the metadata, not lost silently. The shard folder is built beside the
old one and swapped in by renames when complete, as the schedule's shards are; on an object-store
root it is built in a local staging folder and uploaded, ``index.json`` last (the commit point), and
the lineage table is uploaded whole after it (:mod:`refinery.table_store`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field, model_validator

from refinery import markdown
from refinery.metadata import CheckOutcome, FilePath, Json, Markdown, Published
from refinery.names import TOKENIZED_CORPUS, TRAINING_SCHEDULE, TRAINING_TOKENS
from refinery.schedule.shards import manifest_digest
from refinery.storage import Storage
from refinery.table_store import (
    AnyStorage,
    commit_folder,
    discard_staging,
    folder_staging,
    is_object,
    put_file,
    read_table,
    register_files,
    shown,
    table_size,
)
from refinery.tokens import lineage
from refinery.tokens.megatron import MegatronShard, write_shard
from refinery.tokens.packing import Packer, flatten_tokens
from refinery.tokens.tokenizer import TokenizerError, dtype_for, stored_info

INDEX_FILE = "index.json"
DOMAINS_FILE = "sequence_domains.npy"
FORMATS = ("megatron", "litdata")


class TrainingTokensParams(BaseModel):
    """training_tokens' parameters: sequence length, dtype, formats, and the batch geometry that
    maps global steps to sequences."""

    seq_len: int = Field(512, description="Tokens a model sees per sequence; sequences hold seq_len + 1.")
    dtype: Literal["auto", "uint16", "int32"] = Field(
        "auto", description="Token id dtype: the smallest that holds the vocabulary (auto), or one chosen."
    )
    micro_batch_size: int = Field(4, description="Sequences per rank per forward pass.")
    data_parallel_size: int = Field(1, description="Data-parallel ranks.")
    grad_accumulation: int = Field(1, description="Micro-batches per optimizer step.")
    shard_sequences: int = Field(8_192, description="Sequences per Megatron .bin/.idx shard.")
    chunk_sequences: int = Field(1_024, description="Sequences per litdata chunk file.")
    formats: list[str] = Field(
        ["megatron", "litdata"], description="Formats written (Megatron is what the loader reads)."
    )
    read_docs: int = Field(2_048, description="Documents read per batch from the joined corpus.")

    @model_validator(mode="after")
    def _ranges(self) -> TrainingTokensParams:
        if min(self.seq_len, self.micro_batch_size, self.data_parallel_size, self.grad_accumulation) < 1:
            raise ValueError("seq_len, micro_batch_size, data_parallel_size, grad_accumulation must be ≥ 1")
        if self.shard_sequences < 1 or self.chunk_sequences < 1 or self.read_docs < 1:
            raise ValueError("shard_sequences, chunk_sequences and read_docs must be ≥ 1")
        unknown = sorted(set(self.formats) - set(FORMATS))
        if unknown:
            raise ValueError(f"unknown formats {unknown}: choose from {list(FORMATS)}")
        if "megatron" not in self.formats:
            raise ValueError("formats must include megatron: the loader and the lineage checks read it")
        return self

    @property
    def sequences_per_step(self) -> int:
        return self.micro_batch_size * self.data_parallel_size * self.grad_accumulation


def check_inputs(storage: AnyStorage, sources: list[str], params: TrainingTokensParams) -> tuple[dict, str]:
    """(tokenizer info, dtype), or a clear error before anything is written."""
    info = stored_info(storage)
    dtype = dtype_for(int(info["vocab_size"]), params.dtype)
    stale, missing = [], []
    for source in sources:
        if not storage.exists(TOKENIZED_CORPUS, source):
            missing.append(source)
            continue
        made_with = storage.provenance(TOKENIZED_CORPUS, source).get("tokenizer_digest")
        if made_with != info["digest"]:
            stale.append(f"{source} (tokenizer {made_with})")
    if missing:
        raise TokenizerError(f"tokenized_corpus is missing for sources {missing}: materialize it first")
    if stale:
        raise TokenizerError(
            f"tokenized_corpus was made with another tokenizer than the current one ({info['digest']}) "
            f"for {stale}: re-materialize tokenized_corpus for those sources"
        )
    return info, dtype


def _rejections(storage: Storage, sources: list[str]) -> pd.DataFrame:
    frames = []
    for source in sources:
        if storage.files(TOKENIZED_CORPUS, source, rejected=True):
            frames.append(
                storage.read(TOKENIZED_CORPUS, source, rejected=True, columns=["source", "id", "reason"])
            )
    return (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["source", "id", "reason"])
    )


class _SplitWriter:
    """One split's shards in both formats, fed block by block.

    litdata, not MosaicML MDS, is the streaming format: LitGPT's pretraining recipes read exactly
    this layout (``StreamingDataset(dir, item_loader=TokensLoader(block_size=seq_len + 1))``), and
    litdata installs beside the rest of Refinery, while mosaicml-streaming 0.13 pins numpy below 2.2
    and older tokenizers/transformers. Each item is one packed sequence and a chunk holds
    ``chunk_sequences`` of them, so a TokensLoader block is exactly one sequence, in order."""

    def __init__(self, folder: Path, split: str, params: TrainingTokensParams):
        self.folder, self.split, self.params = folder, split, params
        self.shards: list[dict] = []
        self.litdata = None
        if "litdata" in params.formats:
            from litdata.streaming.item_loader import TokensLoader
            from litdata.streaming.writer import BinaryWriter

            (folder / "litdata").mkdir(parents=True)
            self.litdata = BinaryWriter(
                str(folder / "litdata"),
                chunk_size=params.chunk_sequences * (params.seq_len + 1),
                item_loader=TokensLoader(),
            )
        (folder / "megatron").mkdir(parents=True, exist_ok=True)
        self.written = 0

    def write(self, block: np.ndarray) -> None:
        prefix = self.folder / "megatron" / f"shard-{len(self.shards):05d}"
        write_shard(prefix, block)
        self.shards.append(
            {"prefix": f"{self.split}/megatron/{prefix.name}", "first": self.written, "sequences": len(block)}
        )
        if self.litdata is not None:
            for i, row in enumerate(block):
                self.litdata.add_item(self.written + i, row)
        self.written += len(block)

    def close(self) -> None:
        if self.litdata is not None and self.written:
            self.litdata.done()
            self.litdata.merge()


def pack_split(
    con,
    split: str,
    folder: Path,
    params: TrainingTokensParams,
    dtype: str,
    pad_id: int,
    sink: lineage.LineageSink,
) -> tuple[dict, list[tuple[str, str]]]:
    """Pack one split, its lineage into ``sink``; returns (its index entry, the scheduled
    documents without tokens)."""
    seq_tokens = params.seq_len + 1
    packer = Packer(seq_tokens, np.dtype(dtype), pad_id)
    writer = _SplitWriter(folder, split, params)
    reader = con.sql(
        "SELECT m.position, m.domain, m.source, m.id, m.epoch, t.tokens "
        "FROM manifest m LEFT JOIN tokens t ON m.source = t.source AND m.id = t.id "
        "WHERE m.split = ? ORDER BY m.position",
        params=[split],
    ).to_arrow_reader(params.read_docs)
    documents = skipped = 0
    skipped_ids: list[tuple[str, str]] = []
    for batch in reader:
        has = batch.column("tokens").is_valid().to_numpy(zero_copy_only=False)
        if not has.all():
            gone = pa.Table.from_batches([batch]).filter(pa.array(~has))
            skipped += gone.num_rows
            skipped_ids += list(
                zip(gone.column("source").to_pylist(), gone.column("id").to_pylist(), strict=True)
            )
            batch = pa.Table.from_batches([batch]).filter(pa.array(has)).to_batches()
            batch = batch[0] if batch else None
        if batch is None or not batch.num_rows:
            continue
        values, lengths = flatten_tokens(batch.column("tokens"))
        if len(values) and int(values.max()) >= np.iinfo(dtype).max + 1:
            raise TokenizerError(f"token id {int(values.max())} does not fit dtype {dtype}")
        cut = packer.add(values, lengths)
        doc = cut["doc"]
        sink.add(
            split,
            pa.table(
                {
                    "sequence": cut["sequence"],
                    "offset": cut["offset"],
                    "length": cut["length"],
                    "domain": batch.column("domain").take(pa.array(doc)),
                    "source": batch.column("source").take(pa.array(doc)),
                    "id": batch.column("id").take(pa.array(doc)),
                    "position": batch.column("position").to_numpy().astype(np.int64)[doc],
                    "epoch": batch.column("epoch").to_numpy().astype(np.int32)[doc],
                    "doc_start": cut["doc_start"].astype(np.int64),
                    "doc_tokens": lengths[doc],
                }
            ),
        )
        documents += batch.num_rows
        for block in packer.blocks(params.shard_sequences):
            writer.write(block)
    for block in packer.blocks(params.shard_sequences, final=True):
        writer.write(block)
    writer.close()
    np.save(folder / DOMAINS_FILE, sink.end_split(writer.written))
    entry = {
        "sequences": writer.written,
        "tokens": packer.streamed,
        "pad_tokens": writer.written * seq_tokens - packer.streamed,
        "documents": documents,
        "documents_without_tokens": skipped,
        "megatron": writer.shards,
        "litdata": f"{split}/litdata" if writer.litdata is not None and writer.written else None,
        "domains": sink.domains,  # sequence_domains.npy: each sequence's majority domain, a code into this
    }
    return entry, skipped_ids


def publish_training_tokens(storage: AnyStorage, params: TrainingTokensParams, stamp: dict) -> Published:
    """Check, pack every split, write the index and lineage, then verify from the files."""
    import duckdb

    manifest = read_table(storage, TRAINING_SCHEDULE)
    sources = sorted(set(manifest.column("source").to_pylist()))
    info, dtype = check_inputs(storage, sources, params)  # before any file is written
    staging = folder_staging(storage, TRAINING_TOKENS)
    files = [f for s in sources for f in storage.files(TOKENIZED_CORPUS, s)]
    geometry = {
        "seq_len": params.seq_len,
        "sequences_per_step": params.sequences_per_step,
        "micro_batch_size": params.micro_batch_size,
        "data_parallel_size": params.data_parallel_size,
        "grad_accumulation": params.grad_accumulation,
    }
    head = {"tokenizer_digest": info["digest"], "dtype": dtype, **geometry}
    domains = sorted(set(manifest.column("domain").to_pylist()))
    target = storage.table_path(TRAINING_TOKENS)
    local_lineage = (  # on an object store, written locally and uploaded whole once complete
        Path(tempfile.mkdtemp(prefix="refinery-lineage-")) / Path(target).name
        if is_object(storage)
        else Path(target)
    )
    sink = lineage.LineageSink(local_lineage, stamp | {"index": head}, domains, params.sequences_per_step)
    con = duckdb.connect()
    splits, skipped = {}, []
    try:
        con.register("manifest", manifest)
        register_files(
            con, storage, "tokens", files, {"source": "VARCHAR", "id": "VARCHAR", "tokens": "INTEGER[]"}
        )
        for split in sorted(set(manifest.column("split").to_pylist())):
            entry, gone = pack_split(con, split, staging / split, params, dtype, int(info["pad_id"]), sink)
            splits[split], skipped = entry, skipped + gone
        index = {
            "tokenizer_digest": info["digest"],
            "vocab_size": int(info["vocab_size"]),
            "eos_id": int(info["eos_id"]),
            "pad_id": int(info["pad_id"]),
            "dtype": dtype,
            **geometry,
            "schedule_id": manifest_digest(manifest),
            "packing": "concatenated",
            "splits": splits,
        }
        (staging / INDEX_FILE).write_text(json.dumps(index, indent=1, sort_keys=True))
    except BaseException:
        discard_staging(storage, staging)
        sink.abort()
        if is_object(storage):
            shutil.rmtree(local_lineage.parent, ignore_errors=True)
        raise
    finally:
        con.close()
    try:
        final = commit_folder(storage, TRAINING_TOKENS, staging)
        committed = sink.commit()
        problems = verify(final, index, committed, storage.fs)
        path = (
            put_file(storage, TRAINING_TOKENS, committed, Path(target).name) if is_object(storage) else target
        )
    except BaseException:
        sink.abort()  # a no-op once committed
        raise
    finally:
        if is_object(storage):
            shutil.rmtree(local_lineage.parent, ignore_errors=True)
    return _published(storage, index, sink, path, final, problems, skipped, sources, params)


def verify(root: str | Path, index: dict, lineage_path: Path, filesystem=None) -> list[str]:
    """From the files: per split, the shards hold the index's sequences (read through ``filesystem``
    when the shards are on an object store), and the lineage pieces tile the real tokens exactly
    once, in order (sequence by sequence, offsets back to back)."""
    problems = []
    for split, entry in index["splits"].items():
        count = sum(len(MegatronShard(f"{root}/{s['prefix']}", filesystem)) for s in entry["megatron"])
        if count != entry["sequences"]:
            problems.append(
                f"{split}: {count} sequences in the Megatron shards, index says {entry['sequences']}"
            )
    return problems + lineage.check_tiling(lineage_path, index["splits"], index["seq_len"] + 1)


def _published(storage, index, sink, path, root, problems, skipped, sources, params) -> Published:
    rejected = _rejections(storage, sources)
    reasons = {}
    if skipped:
        gone = pd.DataFrame(skipped, columns=["source", "id"]).merge(
            rejected, on=["source", "id"], how="left"
        )
        reasons = gone["reason"].fillna("not in tokenized_corpus").value_counts().to_dict()
    rows = [
        (
            s,
            e["documents"],
            e["sequences"],
            e["tokens"],
            e["pad_tokens"],
            e["documents_without_tokens"],
            len(e["megatron"]),
        )
        for s, e in index["splits"].items()
    ]
    train = index["splits"].get("train", next(iter(index["splits"].values()), {"sequences": 0}))
    steps = -(-train["sequences"] // index["sequences_per_step"])
    by_source = sink.tokens_per_source
    first = sink.samples.get("train", next(iter(sink.samples.values()), None))
    sample = lineage.sample_step(first) if first is not None else "_no sequences_"
    meta = {
        "splits": Markdown(
            markdown.table(
                [
                    "split",
                    "documents",
                    "sequences",
                    "tokens",
                    "pad tokens",
                    "documents without tokens",
                    "megatron shards",
                ],
                rows,
            )
        ),
        "packing": "concatenated: documents end to end, each with its EOS; the last sequence padded, masked",
        "seq_len": params.seq_len,
        "dtype": index["dtype"],
        "tokenizer_digest": index["tokenizer_digest"],
        "sequences_per_step": index["sequences_per_step"],
        "train_steps": steps,
        "tokens_per_source": Json({k: int(v) for k, v in by_source.items()}),
        "documents_without_tokens": Json({k: int(v) for k, v in reasons.items()}),
        "lineage_bytes_per_sequence": round(
            table_size(storage, path) / max(sum(e["sequences"] for e in index["splits"].values()), 1), 2
        ),
        "trace_step_0": Markdown(sample),
        "lineage": FilePath.of(shown(storage, path)),
        "shards": FilePath.of(shown(storage, root)),
        "parameters": Json(params.model_dump()),
    }
    check = CheckOutcome(
        "tokens_exactly_once",
        not problems,
        {"problems": Markdown("\n".join(f"- {p}" for p in problems) or "_none_")},
    )
    warnings = [f"{n} scheduled documents have no tokens ({k})" for k, n in reasons.items()]
    return Published(meta, [check], warnings=warnings, schema=lineage.SCHEMA, rows=sink.rows)
