"""``refinery search`` and ``refinery index vectors``: the argparse wiring, kept beside the library.

refinery_cli/commands.py adds them with two calls (``add_search_parser(sub)`` and
``add_vectors_parser(index_sub)``); the handlers only read files under ``--home``.
"""

from __future__ import annotations

import argparse
import json
import sys

from refinery.paths import Layout
from refinery.vector_collections import COLLECTIONS

PREVIEW_COLUMNS = ["rank", "score", "source", "id", "stage", "status", "reason"]


def add_search_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "search",
        help="similarity search over the stored embeddings: documents, or images / captions (CLIP)",
    )
    p.add_argument("query", help="the text to search for")
    p.add_argument("--k", type=int, default=10, help="hits to return (default 10)")
    p.add_argument("--collection", choices=sorted(COLLECTIONS), default="documents")
    p.add_argument("--exact", action="store_true", help="brute force over the stored vectors (no HNSW)")
    p.add_argument("--source", action="append", help="only this partition (repeatable)")
    p.add_argument(
        "--sql",
        help="SQL over the stage views with the hits in table vector_hits (query, rank, score, source, id), "
        'e.g. "SELECT h.rank, p.* FROM vector_hits h JOIN pretrain_corpus p USING (source, id)"',
    )
    p.add_argument(
        "--update", action="store_true", help="build missing or stale partitions of the index first"
    )
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--width", type=int, default=80, help="characters of text shown per hit (table format)")
    p.set_defaults(func=cmd_search)
    return p


def add_vectors_parser(index_sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = index_sub.add_parser("vectors", help="build / refresh the vector index and show its partitions")
    p.add_argument("--collection", choices=sorted(COLLECTIONS), action="append")
    p.add_argument("--status", action="store_true", help="only show the state, build nothing")
    p.set_defaults(func=cmd_index_vectors)
    return p


def _print(frame, fmt: str, width: int) -> None:
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        print(json.dumps(frame.to_dict("records"), default=str, indent=1))
    else:
        import pandas as pd

        with pd.option_context(
            "display.max_columns", 50, "display.width", 250, "display.max_colwidth", width
        ):
            print(frame.to_string(index=False))


def cmd_search(args: argparse.Namespace) -> int:
    from refinery.object_storage import open_storage
    from refinery.paths import storage_root
    from refinery.retrieval.index import VectorIndex
    from refinery.retrieval.search import search, unindexed
    from refinery.retrieval.search_sql import search_sql

    layout = Layout.at(args.home)
    try:
        if args.update:
            VectorIndex.at(layout, args.collection).sync(open_storage(storage_root(layout)))
        missing = unindexed(layout.home, args.collection)
        if missing:
            print(
                f"note: {missing} have embeddings but are not indexed (refinery index vectors)",
                file=sys.stderr,
            )
        if args.sql:
            frame = search_sql(
                layout.home, args.query, args.sql, args.k, args.collection, args.exact, partitions=args.source
            )
        else:
            frame = search(
                args.query,
                args.k,
                home=layout.home,
                collection_name=args.collection,
                exact=args.exact,
                partitions=args.source,
            )
            if args.format == "table":
                text = COLLECTIONS[args.collection].text_column
                shown = [c for c in PREVIEW_COLUMNS if c in frame.columns]
                frame = frame[shown + ([text] if text in frame.columns else [])]
                if text in frame.columns:
                    frame = frame.assign(**{text: frame[text].map(lambda t: " ".join(str(t).split()))})
    except (FileNotFoundError, ValueError, RuntimeError) as err:  # index missing, model mismatch, stale
        print(f"error: {err}", file=sys.stderr)
        return 2
    _print(frame, args.format, args.width)
    return 0


def cmd_index_vectors(args: argparse.Namespace) -> int:
    from refinery.object_storage import open_storage
    from refinery.paths import storage_root
    from refinery.retrieval.index import VectorIndex

    layout = Layout.at(args.home)
    storage = open_storage(storage_root(layout))  # $REFINERY_STORAGE_ROOT when set
    for name in args.collection or sorted(COLLECTIONS):
        index = VectorIndex.at(layout, name)
        if not args.status:
            for partition, action in index.sync(storage).items():
                print(f"{name}: {action} {partition}")
        status = index.status(storage)
        if len(status):
            print(f"\n{name} ({index.folder})")
            _print(status, "table", 60)
    return 0
