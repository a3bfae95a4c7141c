"""One partition's run against a shared dedup index, as a context manager.

The rule every index follows: **the claim that reaches the index first wins.** A claim is made per
batch, atomically (one short SQLite ``BEGIN IMMEDIATE`` transaction, or one Redis Lua script), so
when runs in several threads, processes or machines claim the same content at the same time, the
one whose batch reaches the index first owns it and every later claimant, in whatever process,
gets ``duplicate_of`` = the owner. Within a batch, reading order decides.

:meth:`ClaimIndex.claiming` wraps one partition's run:

- on enter, the partition's previous claims are withdrawn (their own short transactions), so a
  re-materialization replaces its contribution instead of counting it twice, and unchanged input
  gets back exactly the same claims;
- on normal exit, the run is complete: ``withdrawn`` lists claims withdrawn on enter and not renewed
  (documents that left the partition or lost their claim: another partition may have dropped a
  copy in their favour and should be re-run), ``size`` the index's entries;
- on an exception, the claims this run made are withdrawn (abort), so a failed run leaves nothing
  behind; a run killed outright (SIGKILL, power loss) leaves the claims of its committed batches,
  and the partition's next run withdraws them on enter;
- always, the index's connections are closed (open one index per run).

Two runs of the *same* partition at the same time are not supported (each withdraws the other's
claims); Dagster runs one materialization of a partition at a time unless asked otherwise.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from pydantic import BaseModel, Field

from refinery.ids import doc_key
from refinery.storage import DEFAULT_BATCH_ROWS

Token = TypeVar("Token")


class ClaimBatchParams(BaseModel):
    """How many rows a dedup stage reads, decides and claims at a time."""

    batch_rows: int = Field(
        DEFAULT_BATCH_ROWS,
        ge=1,
        description="Rows per batch. Each batch is claimed in one atomic step (fuzzy: chunks of at most "
        "1,000), so concurrent partitions interleave batch by batch; smaller batches interleave finer "
        "at the cost of more index round trips.",
    )


class ClaimRun(Generic[Token]):
    """What one partition claimed: tracks previous claims to report those not renewed."""

    def __init__(self, index: ClaimIndex, source: str):
        self.index, self.source = index, source
        self.previous: set[tuple[str, Token]] = set()  # (doc id, what it claimed: hash / signature digest)
        self.withdrawn: list[str] = []  # set on commit
        self.replaced = 0  # claims withdrawn on enter
        self.size: int | None = None  # index entries after commit
        self.committed = False

    def renewed(self, doc_id: str, token: Token) -> None:
        """The run claimed ``token`` for ``doc_id`` again: not a withdrawn claim."""
        self.previous.discard((doc_id, token))

    def _begin(self) -> None:
        self.previous = self.index.withdraw(self.source)
        self.replaced = len(self.previous)

    def _commit(self) -> None:
        self.withdrawn = sorted({doc_key(self.source, d) for d, _ in self.previous})
        self.previous = set()
        self.size = self.index.count()
        self.committed = True

    def _abort(self) -> None:
        self.index.withdraw(self.source)


R = TypeVar("R", bound=ClaimRun)


class ClaimIndex(ABC, Generic[R]):
    """An index that partitions claim entries in, first come first served."""

    @abstractmethod
    def withdraw(self, source: str) -> set[tuple[str, object]]:
        """Remove every claim of ``source`` (per-document atomic, in short transactions);
        returns the (doc id, token) of the claims removed."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _run(self, source: str) -> R: ...

    @contextmanager
    def claiming(self, source: str) -> Iterator[R]:
        """Withdraw ``source``'s claims, yield its run, then commit (or abort on an exception)."""
        try:
            run = self._run(source)
            run._begin()
            try:
                yield run
            except BaseException as err:
                try:
                    run._abort()
                except Exception as failed:  # keep the run's own error; the next run withdraws them
                    err.add_note(f"withdrawing the claims of the failed run of {source!r} failed: {failed!r}")
                raise
            run._commit()
        finally:
            self.close()


def digest(data: bytes) -> bytes:
    """A short fingerprint of a claimed value (a signature), to tell renewed claims from changed ones."""
    return hashlib.blake2b(data, digest_size=8).digest()
