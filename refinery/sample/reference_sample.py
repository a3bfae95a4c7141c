"""The bundled reference corpus: clean articles the model-based quality stages learn from.

``reference_lm`` trains its n-gram model on it and ``quality_classifier`` uses it as the positive
class, as CCNet and GPT-3 used Wikipedia and curated web text. It is written to
``$REFINERY_HOME/inbox/reference/curated/`` (the default ``reference_source``): a few hundred KB of
well-formed, multi-paragraph articles over every topic of the prose generator, with ids, and
nothing else (no boilerplate, spam, PII or other languages), so the models learn what clean prose
looks like. Generated from a seed, so it is the same on every machine.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from refinery.quality.reference import DEFAULT_REFERENCE_SOURCE
from refinery.sample import prose

# Articles per topic, in about the proportions of the bundled text sample (news: history, economics,
# travel; forum: health, cooking, gardening; web: software, astronomy). A reference corpus whose
# topic mix differs from the crawl's teaches a classifier topic instead of quality: the known
# bias of GPT-3-style filters. Matching the mix leaves quality as the only signal to learn.
TOPIC_ARTICLES = {
    "history": 40,
    "economics": 26,
    "travel": 26,
    "health": 22,
    "cooking": 16,
    "gardening": 16,
    "software": 16,
    "astronomy": 16,
}


def reference_articles(seed: int = 11, scale: float = 1.0) -> list[dict]:
    """Articles of 3–6 paragraphs per topic (``TOPIC_ARTICLES`` × ``scale``), with ``id`` and ``text``."""
    rng = random.Random(seed)
    records = []
    for topic, count in TOPIC_ARTICLES.items():
        for i in range(max(1, round(count * scale))):
            text = prose.article(rng, topic, paragraphs=rng.randint(3, 6))
            records.append({"id": f"ref-{topic}-{i:03d}", "text": text, "meta": {"topic": topic}})
    rng.shuffle(records)
    return records


def build_reference_sample(
    inbox_reference_dir: Path, seed: int = 11, source: str = DEFAULT_REFERENCE_SOURCE
) -> dict[str, int]:
    """Write ``<inbox_reference_dir>/<source>/articles.jsonl``; returns files per source."""
    folder = Path(inbox_reference_dir) / source
    folder.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(r, ensure_ascii=False) for r in reference_articles(seed))
    (folder / "articles.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {source: 1}
