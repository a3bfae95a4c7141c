"""``TokenDataset``: the packed tokens as a PyTorch ``IterableDataset`` of whole batches.

The static stream is :class:`refinery.tokens.loader.TokenReader`'s, the adaptive one (with
``feedback=``) :class:`refinery.tokens.adaptive.AdaptiveTokenReader`'s; see those modules for the
guarantees. torch is imported when ``TokenDataset`` is first used, not when this module is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from refinery.schedule.shard_reading import resolve_rank
from refinery.tokens.adaptive import AdaptiveTokenReader
from refinery.tokens.loader import LastStep, TokenLoaderError, TokenReader, read_index


def _define_dataset():
    import torch

    class TokenDataset(torch.utils.data.IterableDataset):
        """A split of ``training_tokens`` as an ``IterableDataset`` of whole batches (dicts of
        tensors). ``rank``/``world_size`` default to ``torch.distributed`` when initialised.
        Iterate with ``DataLoader(dataset, batch_size=None, num_workers=W)``. ``feedback``: the
        folder of the weight log of :func:`refinery.tokens.adaptive.online_doremi`; the stream
        then follows the domain weights the loop feeds back, for ``steps`` steps."""

        def __init__(
            self,
            root: str | Path,
            split: str = "train",
            batch_size: int | None = None,
            start_step: int = 0,
            rank: int | None = None,
            world_size: int | None = None,
            last_step: LastStep = "pad",
            tokenizer_digest: str | None = None,
            feedback: str | Path | None = None,
            steps: int | None = None,
        ):
            super().__init__()
            rank, world_size = resolve_rank(rank, world_size)
            self.options = {
                "root": str(root),
                "split": split,
                "rank": rank,
                "world_size": world_size,
                "batch_size": batch_size,
                "start_step": start_step,
            }
            if tokenizer_digest is not None and tokenizer_digest != read_index(root)["tokenizer_digest"]:
                TokenReader(root, split, tokenizer_digest=tokenizer_digest)  # raises the mismatch error
            if feedback is None:
                if steps is not None:
                    raise TokenLoaderError("steps= applies to the adaptive stream only (give feedback=)")
                self.options["last_step"] = last_step
            else:
                self.options |= {"feedback": str(feedback), "steps": steps}
            self._len = self._reader().num_batches()  # validates now, in the main process

        def _reader(self, worker: int = 0, workers: int = 1):
            options = self.options | {"worker": worker, "num_workers": workers}
            if "feedback" in options:
                return AdaptiveTokenReader(**options)
            return TokenReader(**options)

        def __len__(self) -> int:
            return self._len

        def loader(self, num_workers: int = 0, **kwargs) -> torch.utils.data.DataLoader:
            return torch.utils.data.DataLoader(self, batch_size=None, num_workers=num_workers, **kwargs)

        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
            for batch in self._reader(worker, workers).batches():
                yield {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}

    TokenDataset.__module__ = __name__
    TokenDataset.__qualname__ = "TokenDataset"
    return TokenDataset


def __getattr__(name: str):
    """``TokenDataset`` is built (importing torch) on first access, then kept."""
    if name == "TokenDataset":
        cls = _define_dataset()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
