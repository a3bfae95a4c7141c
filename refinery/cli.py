"""The file-only commands of ``refinery``: the sample, status, SQL, similarity search, the indexes.

They work on the files under the home alone and never import Dagster. The commands that drive
Dagster (init, run, demo, partitions) live above the library, in the top-level ``cli.py``, which
adds these to its parser.
"""

from __future__ import annotations

import argparse
import json
import sys

from refinery.paths import Layout


def layout_of(args: argparse.Namespace) -> Layout:
    return Layout.at(args.home)


def cmd_sample(args: argparse.Namespace) -> int:
    from refinery.sample.text_sample import build_text_sample

    target = layout_of(args).inbox_kind("text")
    existing = [p.name for p in target.iterdir()] if target.is_dir() else []
    if existing and not args.force:
        print(f"{target} already holds sources {sorted(existing)}; use --force to rewrite the sample")
        return 0
    written = build_text_sample(target, seed=args.seed)
    print(f"sample written to {target}: " + ", ".join(f"{k} ({v} files)" for k, v in written.items()))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from refinery.report import build_report
    from refinery.storage import Storage

    report = build_report(Storage(layout_of(args).storage))
    print(report.markdown())
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from refinery.sql import connect

    con = connect(layout_of(args).storage)
    try:
        frame = con.execute(args.query).df()
    except Exception as err:  # duckdb raises many types; show the message, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(json.dumps(frame.to_dict("records"), default=str, indent=1))
    else:
        import pandas as pd

        with pd.option_context(
            "display.max_rows",
            args.max_rows,
            "display.max_columns",
            50,
            "display.width",
            200,
            "display.max_colwidth",
            80,
        ):
            print(frame.to_string(index=False, max_rows=args.max_rows))
    return 0


def cmd_index_reset(args: argparse.Namespace) -> int:
    from refinery.dedup.backends import reset_indexes

    removed = reset_indexes(args.backend, layout_of(args), args.redis_url, args.namespace, args.which)
    print(
        f"removed {len(removed)} index entries/files"
        + (f": {removed[:5]}…" if len(removed) > 5 else f": {removed}")
    )
    print("re-materialize the dedup stages of every partition to rebuild the index")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the file-only commands on a ``refinery`` parser's subcommands."""
    from refinery.plan_command import add_plan_parser
    from refinery.retrieval.command import add_search_parser, add_vectors_parser
    from refinery.tokens.command import add_trace_parser

    p = sub.add_parser("sample", help="write the bundled sample into the inbox")
    p.add_argument("--force", action="store_true")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_sample)
    sub.add_parser("status", help="documents per stage and removal reasons").set_defaults(func=cmd_status)
    p = sub.add_parser("sql", help="run SQL over every stage (views: <asset>, rejected_<asset>)")
    p.add_argument("query")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--max-rows", type=int, default=50)
    p.set_defaults(func=cmd_sql)
    p = sub.add_parser("index", help="manage the dedup indexes")
    isub = p.add_subparsers(dest="index_command", required=True)
    r = isub.add_parser("reset", help="delete a dedup index")
    r.add_argument("which", choices=["exact", "fuzzy", "all"])
    r.add_argument("--backend", default="local", choices=["local", "redis", "redis-cluster"])
    r.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    r.add_argument("--namespace", default="refinery")
    r.set_defaults(func=cmd_index_reset)
    add_vectors_parser(isub)  # refinery index vectors [--collection C]… [--status]
    add_search_parser(sub)  # refinery search "query" [--k 10] [--collection …] [--exact] [--sql …]
    add_trace_parser(sub)  # refinery trace --step N | --doc source/id
    add_plan_parser(sub)  # refinery plan [--scale-to 1TB] [--nodes 4 --cores 16 --memory-gb 64]
