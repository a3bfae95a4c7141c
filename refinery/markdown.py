"""Small Markdown renderings for metadata shown in the Dagster UI and for written reports."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def _cell(value: object) -> str:
    if isinstance(value, float) and value != value:  # NaN
        text = ""
    elif isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        text = f"{int(value):,}"
    elif isinstance(value, int) and not isinstance(value, bool):
        text = f"{value:,}"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ⏎ ")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def preview(text: object, limit: int = 160) -> str:
    """One line of at most ``limit`` characters; bytes are shown decoded, missing values empty."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def bars(rows: Sequence[tuple[str, int]], width: int = 30) -> str:
    """A histogram as a table of labelled bars."""
    top = max((n for _, n in rows), default=0) or 1
    return table(
        ["bin", "count", ""],
        [(label, n, "█" * max(1 if n else 0, round(width * n / top))) for label, n in rows],
    )


def reasons(counts: dict[str, int], total: int) -> str:
    if not counts:
        return "_nothing removed_"
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return table(
        ["reason", "rows", "share of input"],
        [(r, n, f"{n / total:.1%}" if total else "") for r, n in ordered],
    )
