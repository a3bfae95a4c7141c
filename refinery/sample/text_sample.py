"""The bundled text sample: four sources that exercise every stage and every failure path.

- ``news``: clean articles with ids (JSONL, plus a gzipped archive that starts with a BOM),
  some with PII and mojibake.
- ``forum``: posts without ids, spam, stubs, PII, other languages, near and exact copies of
  news articles, and broken lines of every kind (malformed JSON, Latin-1 bytes, missing and empty
  text, a non-object, a non-string text, a repeated id, an oversized document).
- ``web``: a Parquet crawl with boilerplate, lorem ipsum, code, bullet dumps, copies; loose text
  files in UTF-8, UTF-8 with BOM, UTF-16 and Latin-1; an empty file; a CSV nobody asked for;
  and a corrupt Parquet file.
- ``books``: long chapters in a gzipped JSONL, and a truncated gzip.

Everything is generated from a seed, so the sample is the same on every machine.
"""

from __future__ import annotations

import codecs
import gzip
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.sample import prose

SOURCES = ("news", "forum", "web", "books")


def _jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def _news(rng: random.Random) -> tuple[list[dict], list[dict]]:
    articles = []
    for i in range(260):
        text = prose.article(rng, rng.choice(["history", "economics", "travel"]))
        if i % 25 == 3:
            text = prose.with_pii(text, rng)
        if i % 40 == 7:
            text = prose.with_mojibake(text)
        articles.append(
            {
                "id": f"news-{i:04d}",
                "text": text,
                "url": f"https://news.example/{i}",
                "meta": {"section": rng.choice(["local", "business", "travel"]), "year": 2020 + i % 5},
            }
        )
    archive = [
        {
            "id": f"news-archive-{i:03d}",
            "text": prose.article(rng, "history"),
            "url": f"https://news.example/archive/{i}",
        }
        for i in range(60)
    ]
    return articles, archive


def _forum(rng: random.Random, news: list[dict]) -> tuple[list[bytes], list[str]]:
    """The posts file's lines, and the texts of its good posts (for cross-source copies)."""
    lines: list[bytes] = []
    posts: list[str] = []

    def add(record: dict) -> None:
        lines.append(json.dumps(record, ensure_ascii=False).encode())

    for _ in range(150):
        posts.append(
            prose.article(rng, rng.choice(["health", "cooking", "gardening"]), paragraphs=rng.randint(2, 5))
        )
        add(
            {
                "text": posts[-1],
                "meta": {"board": rng.choice(["kitchen", "fitness", "garden"])},
                "score": rng.randint(0, 50),
            }
        )
    for _ in range(40):
        add({"text": prose.keyword_spam(rng)})
    for _ in range(20):
        add({"text": prose.short_stub(rng)})
    for _ in range(15):
        add({"text": prose.with_pii(prose.article(rng, "health", paragraphs=3), rng)})
    for src in rng.sample(news, 12):  # scraped copies with small edits
        add({"text": prose.near_duplicate(src["text"], rng), "url": src["url"] + "?ref=forum"})
    for src in rng.sample(news, 6):
        add({"text": src["text"]})
    for src in rng.sample(news, 4):
        add({"text": prose.surface_variant(src["text"])})
    for lang in ["fr", "de", "es"] * 4:
        add({"text": prose.foreign_article(rng, lang)})
    add({"id": "forum-dup", "text": prose.article(rng, "cooking", paragraphs=3)})
    add({"id": "forum-dup", "text": prose.article(rng, "cooking", paragraphs=3)})  # repeated id
    lines += [
        b'{"text": "unterminated string, then the line ends',
        b'{"text": "trailing comma", }',
        b"not json at all",
        '{"text": "caf\xe9 cr\xe8me written in Latin-1"}'.encode("latin-1"),
        b'{"text": "bad byte \xff\xfe in the middle"}',
        b'{"title": "a record without text"}',
        b'{"text": null}',
        b'{"text": ""}',
        b'{"text": "   \\n\\t  "}',
        b"[1, 2, 3]",
        b'{"text": 42}',
        b"",  # blank line: skipped, counted
    ]
    add({"text": "x " * 600_000})  # 1.2 million characters: oversized
    rng.shuffle(lines)
    return lines, posts


def _web(rng: random.Random, news: list[dict], forum_texts: list[str]) -> list[dict]:
    rows: list[dict] = []
    for _ in range(100):
        rows.append({"text": prose.article(rng, rng.choice(["software", "astronomy"])), "url": None})
    for maker, n in [
        (prose.boilerplate_page, 30),
        (prose.lorem_ipsum, 10),
        (prose.code_snippet, 10),
        (prose.bullet_dump, 10),
        (prose.foreign_article, 15),
    ]:
        rows += [{"text": maker(rng), "url": None} for _ in range(n)]
    for src in rng.sample(news, 10):
        rows.append({"text": prose.near_duplicate(src["text"], rng, edits=2), "url": src["url"] + "#mirror"})
    for text in rng.sample(forum_texts, 5):
        rows.append({"text": text, "url": None})
    for i, row in enumerate(rows):
        row["url"] = row["url"] or f"https://web.example/page/{i}"
        row["crawl_date"] = f"2024-0{1 + i % 9}-1{i % 10}"
    rng.shuffle(rows)
    return rows


def build_text_sample(inbox_text: Path, seed: int = 7) -> dict[str, int]:
    """Write the sample under ``inbox_text`` (``$REFINERY_HOME/inbox/text``); returns files per source."""
    rng = random.Random(seed)
    written: dict[str, int] = {}

    news_dir = inbox_text / "news"
    news_dir.mkdir(parents=True, exist_ok=True)
    articles, archive = _news(rng)
    (news_dir / "articles.jsonl").write_bytes(_jsonl(articles))
    with gzip.open(news_dir / "archive.jsonl.gz", "wb") as fh:
        fh.write(codecs.BOM_UTF8 + _jsonl(archive))
    written["news"] = 2

    forum_dir = inbox_text / "forum"
    forum_dir.mkdir(parents=True, exist_ok=True)
    forum_lines, posts = _forum(rng, articles)
    (forum_dir / "posts.jsonl").write_bytes(b"\n".join(forum_lines) + b"\n")
    written["forum"] = 1

    web_dir = inbox_text / "web"
    pages = web_dir / "pages"
    pages.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(_web(rng, articles, posts)), web_dir / "crawl.parquet")
    (pages / "about-the-observatory.txt").write_text(prose.article(rng, "astronomy"), encoding="utf-8")
    (pages / "garden-diary.txt").write_bytes(codecs.BOM_UTF8 + prose.article(rng, "gardening").encode())
    (pages / "station-history.txt").write_bytes(prose.article(rng, "history").encode("utf-16"))
    (pages / "latin1-page.txt").write_bytes("Ein Text über Äpfel und Bäume, in Latin-1.".encode("latin-1"))
    (pages / "empty.txt").write_bytes(b"")
    (web_dir / "links.csv").write_text("url,title\nhttps://web.example,Example\n")
    (web_dir / "broken.parquet").write_bytes(b"PAR1" + bytes(rng.getrandbits(8) for _ in range(200)))
    written["web"] = 8

    books_dir = inbox_text / "books"
    books_dir.mkdir(parents=True, exist_ok=True)
    chapters = [
        {
            "id": f"book-{i // 5}-ch{i % 5 + 1}",
            "text": prose.article(rng, paragraphs=rng.randint(8, 12)),
            "meta": {"book": i // 5, "chapter": i % 5 + 1},
        }
        for i in range(40)
    ]
    with gzip.open(books_dir / "chapters.jsonl.gz", "wb") as fh:
        fh.write(_jsonl(chapters))
    truncated = gzip.compress(_jsonl([{"text": prose.article(rng)} for _ in range(20)]))
    (books_dir / "partial-upload.jsonl.gz").write_bytes(truncated[: len(truncated) // 2])
    written["books"] = 2
    return written
