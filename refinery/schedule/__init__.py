"""What training reads and in what order: splits, the ordered manifest, and the loader.

``splits`` assigns every corpus document to train/validation/test without letting near copies
straddle splits; ``order`` turns the mixture into an ordered manifest (multi-task mixing,
sequential with replay, or a paced curriculum); ``shards`` writes the manifest's documents in
order; ``loader`` (imports torch) streams them to a training loop.
"""
