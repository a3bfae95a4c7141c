"""``refinery trace``: the documents of a training step, or the steps (or fate) of a document."""

from __future__ import annotations

import argparse
import json
import sys

from refinery.paths import Layout


def cmd_trace(args: argparse.Namespace) -> int:
    import pandas as pd

    from refinery.object_storage import open_storage
    from refinery.paths import storage_root
    from refinery.tokens.trace import TraceError, trace_document, trace_step

    layout = Layout.at(args.home)
    storage = open_storage(str(storage_root(layout)))  # $REFINERY_STORAGE_ROOT, as `refinery sql`
    geometry = {
        "micro_batch_size": args.micro_batch,
        "ranks": args.ranks,
        "grad_accumulation": args.grad_accum,
    }
    try:
        if args.step is not None:
            frame = trace_step(storage, args.step, args.split, **geometry, inbox=layout.inbox_kind("text"))
        else:
            found = trace_document(storage, args.doc, args.source, **geometry)
            if args.format == "json":
                print(
                    json.dumps(
                        {
                            "source": found.source,
                            "id": found.id,
                            "status": found.status,
                            "appearances": found.appearances.to_dict("records"),
                            "removed": found.removed.to_dict("records"),
                        },
                        default=str,
                        indent=1,
                    )
                )
                return 0
            print("\n".join(found.lines()))
            frame = found.appearances if found.status == "trained" else found.removed
            if not len(frame):
                return 0 if found.status != "unknown" else 1
    except TraceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(frame.to_dict("records"), default=str, indent=1))
    elif args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
    else:
        with pd.option_context("display.max_rows", 500, "display.width", 220, "display.max_colwidth", 90):
            print(frame.to_string(index=False))
    return 0


def add_trace_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trace",
        help="which documents a training step read (--step), or where a document went (--doc)",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--step", type=int, help="a global training step")
    which.add_argument("--doc", help="a document: source/id, or an id (with --source)")
    p.add_argument("--source", help="the document's source, when --doc is a bare id")
    p.add_argument("--split", default="train")
    p.add_argument("--micro-batch", type=int, help="sequences per rank per pass (default: as materialized)")
    p.add_argument("--ranks", type=int, help="data-parallel ranks (default: as materialized)")
    p.add_argument("--grad-accum", type=int, help="micro-batches per step (default: as materialized)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_trace)
