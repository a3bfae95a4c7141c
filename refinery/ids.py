"""Document ids: the input's own when it has one, else one derived from the content.

A derived id depends only on the text, so re-ingesting unchanged input yields the same ids.
Two identical texts in one source would collide; the later ones get ``-2``, ``-3``… in reading
order, which is deterministic too. The exact-dedup stage then removes them with a reason.

Across partitions a document is named ``<source>/<id>`` (:func:`doc_key`): the dedup indexes,
the splits' groups, the mixing samples and the classifier's folds all use this one key. Sources
are restricted to file-name-safe characters without '/', so the first '/' always separates the
source from an id that may itself contain slashes.
"""

from __future__ import annotations

import hashlib


def doc_key(source: str, doc_id: str) -> str:
    """A document's name across partitions: ``<source>/<id>``."""
    return f"{source}/{doc_id}"


def split_key(key: str) -> tuple[str, str]:
    """``(source, id)`` of a :func:`doc_key`."""
    source, _, doc_id = key.partition("/")
    return source, doc_id


def content_id(text: str) -> str:
    return content_id_of_utf8(text.encode("utf-8", "surrogatepass"))


def content_id_of_utf8(data: bytes | memoryview) -> str:
    """:func:`content_id` of a text given as its UTF-8 bytes (a slice of an Arrow buffer)."""
    return "doc-" + hashlib.blake2b(data, digest_size=10).hexdigest()


def valid_id(raw_id: object) -> tuple[str | None, str | None]:
    """An input's own id as a string, or the reason it is not one (the checks that need no state)."""
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        return None, f"invalid_id: expected a string or integer, got {type(raw_id).__name__}"
    value = str(raw_id).strip()
    return (value, None) if value else (None, "invalid_id: empty string")


class IdAssigner:
    """Hands out unique ids within one partition and reports explicit ids seen twice."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def explicit(self, raw_id: object) -> tuple[str | None, str | None]:
        """Validate an id from the input: returns (id, None) or (None, error reason)."""
        value, error = valid_id(raw_id)
        if error:
            return None, error
        if value in self._seen:
            return None, f"duplicate_id: id {value!r} already used earlier in this source"
        self._seen.add(value)
        return value, None

    def explicit_all(self, values: list[str]) -> bool:
        """Claim ``values``, ids already valid (non-empty strings without surrounding whitespace:
        what :func:`valid_id` returns unchanged), at once when none repeats and none was seen
        before: then :meth:`explicit` of each, in order, would accept each. False, claiming
        nothing, otherwise (the caller takes them one by one), and always for an assigner whose
        :meth:`explicit` is its own (a task's records each id)."""
        if type(self).explicit is not IdAssigner.explicit:
            return False
        fresh = set(values)
        if len(fresh) != len(values) or not self._seen.isdisjoint(fresh):
            return False
        self._seen |= fresh
        return True

    def derived(self, text: str) -> str:
        return self.claim(content_id(text))

    def claim(self, base: str) -> str:
        """The first of ``base``, ``base-2``, ``base-3``… not yet handed out (a derived id)."""
        candidate, n = base, 1
        while candidate in self._seen:
            n += 1
            candidate = f"{base}-{n}"
        self._seen.add(candidate)
        return candidate
