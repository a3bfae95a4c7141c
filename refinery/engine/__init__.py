"""Where a stage's batches run: in this process (``local``), or spread over a Ray cluster (``ray``)."""
