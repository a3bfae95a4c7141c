"""tokenized_corpus as a partitioned stage: its spec, and the maker that loads the tokenizer.

The maker reads the ``tokenizer`` asset's file once per partition and stamps its digest into
the partition's provenance (``tokenizer_digest``): ``training_tokens`` refuses partitions made
with another tokenizer. The processor pickles with its tokenizer, so the engines can send it to
their workers.
"""

from __future__ import annotations

from refinery import names
from refinery.kernel.spec import StageContext, StageSpec
from refinery.tokens.tokenize import TOKEN_FIELDS, DocumentTokenizer, TokenizeParams
from refinery.tokens.tokenizer import load_stored, special_ids, stored_info

TOKENIZED_CORPUS = StageSpec(
    name=names.TOKENIZED_CORPUS,
    kind="text",
    upstream=names.PRETRAIN_CORPUS,
    reads_also=(names.TOKENIZER,),
    params=TokenizeParams,
    fields=TOKEN_FIELDS,
    histograms={"n_tokens": (16, 64, 256, 1024, 4096, 16384)},
    score_columns=("n_tokens", "pieces"),
    parallel=True,
    description="Every pretrain_corpus document's token ids (the tokenizer asset's), an EOS appended: "
    "columns tokens (list of ids, EOS included), n_tokens and pieces. Documents over "
    "max_document_tokens are split into pieces (each with an EOS) or rejected (too_many_tokens); "
    "documents that encode to no token are rejected (empty_after_tokenization). The tokenizer's "
    "digest is stamped into the partition, so training_tokens refuses a mismatch.",
)


def make_document_tokenizer(run: StageContext) -> DocumentTokenizer:
    info = stored_info(run.storage)
    tokenizer = load_stored(run.storage)
    eos, _ = special_ids(tokenizer, info["eos_token"], None)
    run.provenance["tokenizer_digest"] = info["digest"]
    run.metadata["tokenizer_digest"] = info["digest"]
    run.metadata["vocab_size"] = int(info["vocab_size"])
    return DocumentTokenizer(tokenizer, eos, run.params)
