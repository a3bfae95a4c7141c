"""Why a stored dedup index cannot be used as it is."""

from __future__ import annotations

RESET_HINT = (
    "reset it (`refinery index reset {which}`, with `--backend redis --redis-url … --namespace …` for Redis) "
    "and re-materialize the dedup stages of every partition"
)


class IndexParamsMismatch(ValueError):
    """The index was built with other parameters: its signatures cannot be compared with new ones."""


class IndexFormatError(IndexParamsMismatch):
    """The index was written by another (older) layout of Refinery and would be misread."""


def format_error(which: str, where: str, found: str) -> IndexFormatError:
    return IndexFormatError(
        f"the {which} dedup index at {where} was written in an older format ({found}), which this version "
        f"does not read: {RESET_HINT.format(which=which)}."
    )
