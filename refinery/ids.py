"""Document ids: the input's own when it has one, else one derived from the content.

A derived id depends only on the text, so re-ingesting unchanged input yields the same ids.
Two identical texts in one source would collide; the later ones get ``-2``, ``-3``… in reading
order, which is deterministic too. The exact-dedup stage then removes them with a reason.
"""

from __future__ import annotations

import hashlib


def content_id(text: str) -> str:
    return "doc-" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


class IdAssigner:
    """Hands out unique ids within one partition and reports explicit ids seen twice."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def explicit(self, raw_id: object) -> tuple[str | None, str | None]:
        """Validate an id from the input: returns (id, None) or (None, error reason)."""
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
            return None, f"invalid_id: expected a string or integer, got {type(raw_id).__name__}"
        value = str(raw_id).strip()
        if not value:
            return None, "invalid_id: empty string"
        if value in self._seen:
            return None, f"duplicate_id: id {value!r} already used earlier in this source"
        self._seen.add(value)
        return value, None

    def derived(self, text: str) -> str:
        base = content_id(text)
        candidate, n = base, 1
        while candidate in self._seen:
            n += 1
            candidate = f"{base}-{n}"
        self._seen.add(candidate)
        return candidate
