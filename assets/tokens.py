"""tokenizer, tokenized_corpus and training_tokens: from the corpus to packed token shards."""

import dagster as dg

from assets.factory import config_class, publish, stage_asset
from refinery import names
from refinery.kernel.report import provenance
from refinery.tokens.publish import TrainingTokensParams, publish_training_tokens
from refinery.tokens.stage import TOKENIZED_CORPUS, make_document_tokenizer
from refinery.tokens.tokenizer import TokenizerParams, publish_tokenizer
from resources import RefineryHome

TokenizerConfig = config_class(TokenizerParams, names.TOKENIZER)
TrainingTokensConfig = config_class(TrainingTokensParams, names.TRAINING_TOKENS)


@dg.asset(
    name=names.TOKENIZER,
    deps=[names.PRETRAIN_CORPUS],
    group_name="tokens",
    kinds={"python", "huggingface"},
    description="The tokenizer of every token asset (storage/tokenizer/tokenizer.json): a byte-level BPE "
    "trained with Hugging Face tokenizers on a seeded sample of pretrain_corpus (vocab_size, "
    "special_tokens, sample_documents), or a user's tokenizer.json / local tokenizer folder (mode='load'; "
    "nothing is downloaded). Metadata: vocabulary size, the sample, and bytes per token on held-out "
    "documents per source.",
)
def tokenizer(context: dg.AssetExecutionContext, config: TokenizerConfig, refinery: RefineryHome):
    stamp = provenance(names.TOKENIZER, "all", config)
    return publish(context, publish_tokenizer(refinery.storage(), config, stamp))


tokenized_corpus = stage_asset(TOKENIZED_CORPUS, make_document_tokenizer)


@dg.asset(
    name=names.TRAINING_TOKENS,
    deps=[names.TRAINING_SCHEDULE, names.TOKENIZED_CORPUS, names.TOKENIZER],
    group_name="tokens",
    kinds={"python", "parquet", "duckdb"},
    check_specs=[
        dg.AssetCheckSpec(
            "tokens_exactly_once",
            asset=names.TRAINING_TOKENS,
            blocking=True,
            description="Per split, the Megatron shards hold the index's sequences and the lineage pieces "
            "tile every scheduled document's tokens exactly once, in schedule order.",
        )
    ],
    description="The training schedule's documents as packed sequences of seq_len + 1 token ids "
    "(concatenated, each document ending in its EOS; the last sequence padded and masked), per split in "
    "Megatron-LM's indexed format (storage/training_tokens/shards/<split>/megatron/*.bin/.idx) and as a "
    "litdata dataset for LitGPT's TokensLoader (…/<split>/litdata). The lineage table "
    "(training_tokens.parquet) maps every sequence to its (source, id, token span) pieces and its global "
    "step (micro_batch_size × data_parallel_size × grad_accumulation sequences per step): `refinery trace`. "
    "Refuses, before writing, a tokenized_corpus made with another tokenizer or a dtype too small.",
)
def training_tokens(context: dg.AssetExecutionContext, config: TrainingTokensConfig, refinery: RefineryHome):
    stamp = provenance(names.TRAINING_TOKENS, "all", config)
    return publish(context, publish_training_tokens(refinery.storage(), config, stamp))
