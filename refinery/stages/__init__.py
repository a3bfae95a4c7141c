"""Stages: what each partitioned stage is (its spec), and running one over a partition."""
