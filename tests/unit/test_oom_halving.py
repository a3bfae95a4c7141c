"""A model stage that runs out of GPU memory halves its batch and retries, instead of failing."""

import logging

import numpy as np
import pytest
import torch

from refinery.models.oom import encode_halving, out_of_memory_error


class BudgetEncoder:
    """Encodes rows like a model would, but raises torch's real CUDA out-of-memory error for a
    batch above its memory budget, as a GPU with too little memory does."""

    def __init__(self, budget: int):
        self.budget, self.calls = budget, []

    def __call__(self, batch):
        self.calls.append(len(batch))
        if len(batch) > self.budget:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory: tried {len(batch)} rows")
        return np.asarray(batch, dtype=np.float32)[:, None] * 2


def test_the_exception_type_is_torchs_own():
    assert out_of_memory_error() is torch.cuda.OutOfMemoryError


def test_an_oversized_batch_is_halved_until_it_fits_and_the_order_kept(caplog):
    encoder = BudgetEncoder(budget=3)
    rows = list(range(13))
    with caplog.at_level(logging.WARNING):
        out = encode_halving(encoder, rows)
    np.testing.assert_array_equal(out[:, 0], np.arange(13) * 2)
    assert max(c for c in encoder.calls if c <= 3) <= 3 and encoder.calls[0] == 13
    assert "out of GPU memory on a batch of 13" in caplog.text


def test_a_batch_that_fits_is_encoded_once():
    encoder = BudgetEncoder(budget=64)
    encode_halving(encoder, list(range(10)))
    assert encoder.calls == [10]


def test_a_single_item_that_does_not_fit_fails():
    with pytest.raises(torch.cuda.OutOfMemoryError):
        encode_halving(BudgetEncoder(budget=0), [1, 2])


def test_the_embedder_halves_on_out_of_memory(monkeypatch):
    from refinery.models.embedder import load_embedder

    embedder = load_embedder(device="cpu", batch_size=8, backend="torch")  # halving is the torch path's
    texts = [f"sentence number {i} about rivers" for i in range(8)]
    expected = embedder.encode(texts)
    real = embedder._encode_batch.__func__
    sizes = []

    def tight(self, batch):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(self, batch)

    monkeypatch.setattr(type(embedder), "_encode_batch", tight)
    np.testing.assert_allclose(embedder.encode(texts), expected, atol=1e-5)
    assert sizes[0] == 8 and sum(s for s in sizes if s <= 2) == 8  # halved until every row fitted
