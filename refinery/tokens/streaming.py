"""The packed sequences as a litdata dataset, which LitGPT and Lightning read with ``TokensLoader``.

Why litdata and not MosaicML MDS: LitGPT's pretraining recipes read exactly this layout
(``StreamingDataset(dir, item_loader=TokensLoader(block_size=seq_len + 1))``), and litdata
installs beside the rest of Refinery, while mosaicml-streaming 0.13 pins numpy below 2.2 and
older tokenizers/transformers, which would downgrade the whole environment. litdata's
``StreamingDataLoader`` has a ``state_dict`` for resuming mid-epoch, as MDS does.

Every item is one packed sequence of ``seq_len + 1`` tokens; a chunk (litdata's shard file)
holds ``chunk_sequences`` of them, so a ``TokensLoader`` block of ``seq_len + 1`` tokens is
exactly one packed sequence, and block i is sequence i when the dataset is read unshuffled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_litdata(folder: Path, sequences, chunk_sequences: int, seq_tokens: int) -> int:
    """Write an iterable of 2-D arrays (rows = packed sequences, in order) under ``folder``;
    returns the number of sequences. litdata writes ``index.json`` last (``merge``)."""
    from litdata.streaming.item_loader import TokensLoader
    from litdata.streaming.writer import BinaryWriter

    folder.mkdir(parents=True, exist_ok=True)
    writer = BinaryWriter(str(folder), chunk_size=chunk_sequences * seq_tokens, item_loader=TokensLoader())
    index = 0
    for block in sequences:
        for row in block:
            writer.add_item(index, np.ascontiguousarray(row))
            index += 1
    writer.done()
    writer.merge()
    return index
