"""Training-ready tokens: the tokenizer, tokenization, packing into Megatron and litdata shards,
the lineage from every training step back to its documents, and a loader for the packed tokens."""
