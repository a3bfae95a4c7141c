"""Short stable hashes of JSON-able values: what names a step's staging and scratch folders, so a
retried attempt (which computes the same hash from the same inputs) finds what the failed one wrote.
Below the kernel and the engines, so both name their folders the same way."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able values."""
    canonical = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]
