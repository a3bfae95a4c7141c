"""What a stage reports to a person, in values any orchestrator can render.

The library decides what a user checks first (rows in and out, reasons, score distributions,
samples, the model used); the orchestration layer only renders it. Plain ints, floats, bools
and strings pass through as they are; the three wrappers below say how a value is meant to be
shown, so the library never imports Dagster: ``assets/factory.py`` maps them to
``MetadataValue.md``, ``.json`` and ``.path``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Markdown:
    """Text rendered as Markdown (tables, bar charts, images as data URIs)."""

    text: str


@dataclass(frozen=True)
class Json:
    """A JSON-ready value shown as a collapsible tree (parameters, weights per domain)."""

    value: Any


@dataclass(frozen=True)
class FilePath:
    """A file or folder on disk, shown as a path a person can open."""

    path: str

    @classmethod
    def of(cls, path: str | Path) -> FilePath:
        return cls(str(path))


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one data check, computed from the files a stage wrote."""

    name: str
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Published:
    """What an unpartitioned asset produced: figures to show, checks, lines to log, and the
    table it wrote (its schema and row count fill the orchestrator's own entries)."""

    metadata: dict[str, Any]
    checks: list[CheckOutcome] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    schema: Any = None  # pyarrow.Schema of the main table, when there is one
    rows: int | None = None


def bullet_list(items: list[str], empty: str = "_none_") -> Markdown:
    """A Markdown list, or ``empty`` when there is nothing to list."""
    return Markdown("\n".join(f"- {item}" for item in items) if items else empty)
