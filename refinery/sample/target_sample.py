"""A bundled DSIR target set: documents that look like what the model should be good at.

Written to ``$REFINERY_HOME/inbox/target/<name>/``. By default it is science-and-technology
writing (astronomy and software articles), the topics of the text sample's ``web`` source, so
DSIR should move weight towards ``web`` and away from the history, cooking and gardening of the
other sources. Documents are generated from a seed (a different one from the corpus), so the
target resembles a domain without copying any of its documents.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from refinery.sample import prose

DEFAULT_TOPICS = ("astronomy", "software")


def build_target_sample(
    inbox_target: Path,
    name: str = "target",
    seed: int = 2024,
    documents: int = 80,
    topics: tuple[str, ...] = DEFAULT_TOPICS,
) -> Path:
    """Write ``documents`` articles on ``topics`` under ``inbox_target/name``; returns the folder."""
    unknown = sorted(set(topics) - set(prose.TOPICS))
    if unknown:
        raise ValueError(f"unknown topics {unknown}; choose from {sorted(prose.TOPICS)}")
    rng = random.Random(seed)
    folder = inbox_target / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"id": f"target-{i:04d}", "text": prose.article(rng, rng.choice(list(topics)))})
        for i in range(documents)
    ]
    (folder / "target.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
