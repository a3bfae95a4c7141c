"""The ``refinery`` command: set up a home, run the pipeline through Dagster, query with SQL.

Every subcommand is here. The ones that drive Dagster (init, partitions, run, demo) import it
lazily through :mod:`refinery_cli.launch`; the file-only ones (sample, status, sql, search, index)
work on the files under the home alone and never import Dagster, so they start fast.
"""

from __future__ import annotations

import argparse
import json
import sys

from refinery import names
from refinery.kinds import KINDS
from refinery.paths import Layout

# Inbox folders `refinery init` creates: the partitioned kinds, plus the reference corpus (KenLM,
# quality classifier) and the mixing target set.
INBOX_KINDS = (*KINDS, "reference", "target")


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
    from refinery.object_storage import open_storage
    from refinery.paths import storage_root
    from refinery.report import build_report

    report = build_report(open_storage(str(storage_root(layout_of(args)))))  # $REFINERY_STORAGE_ROOT
    print(report.markdown())
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from refinery.paths import storage_root
    from refinery.sql import connect

    con = connect(storage_root(layout_of(args)))
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


def add_file_commands(sub: argparse._SubParsersAction) -> None:
    """Register the file-only commands (no Dagster) on the parser's subcommands."""
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


# -- the commands that drive Dagster ---------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from refinery_cli import launch

    layout = layout_of(args)
    for folder in (
        *(layout.inbox_kind(k) for k in INBOX_KINDS),
        layout.storage,
        layout.index,
        layout.reports,
    ):
        folder.mkdir(parents=True, exist_ok=True)
    dagster_home = launch.prepare_environment(layout)
    print(f"REFINERY_HOME={layout.home}\nDAGSTER_HOME={dagster_home}")
    return 0


def cmd_partitions(args: argparse.Namespace) -> int:
    from refinery_cli import launch

    layout = layout_of(args)
    launch.prepare_environment(layout)
    added = launch.sync_partitions(layout, args.kind)
    print(f"added partitions: {added}" if added else "no new sources")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from refinery_cli import launch

    layout = layout_of(args)
    launch.prepare_environment(layout)
    print(f"full Dagster log: {launch.log_file(layout)}")
    with launch.stderr_to_log(layout):
        if args.kind == "text":
            outcome = launch.run_text_pipeline(
                layout, args.source or None, report=not args.no_report, train_models=args.train_models or None
            )
        else:
            job = KINDS[args.kind].job
            outcome = launch.run_partitioned_job(layout, args.kind, job, args.source or None)
    failed = [name for name, ok in outcome.items() if not ok]
    print(f"{len(outcome) - len(failed)} of {len(outcome)} runs succeeded")
    print(f"full Dagster log: {launch.log_file(layout)}")
    for name in failed:
        print(f"  FAILED {name}")
    return 0 if not failed else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """Everything on the bundled samples, then where to look."""
    from refinery.report import build_report
    from refinery.sample.bundle import text_source_order, write_missing_samples
    from refinery.sql import connect
    from refinery.storage import Storage
    from refinery_cli import launch

    layout = layout_of(args)
    dagster_home = launch.prepare_environment(layout)
    print(f"full Dagster log: {launch.log_file(layout)}")
    for kind, folder in write_missing_samples(layout, args.seed):
        print(f"bundled {kind} sample written to {folder}")
    with launch.stderr_to_log(layout):  # the terminal shows Refinery's lines only
        outcome = launch.run_text_pipeline(layout, text_source_order(layout))
        outcome.update(launch.run_partitioned_job(layout, "sft", names.SFT_PIPELINE_JOB))
        outcome.update(launch.run_job(names.TRAINING_DATA_JOB, layout))
        # The schedule as token ids: the tokenizer, each source tokenized, the packed shards.
        outcome.update(launch.run_job(names.TOKENIZER_JOB, layout))
        outcome.update(launch.run_partitioned_job(layout, "text", names.TOKENIZE_JOB))
        outcome.update(launch.run_job(names.TRAINING_TOKENS_JOB, layout))
        outcome.update(launch.run_partitioned_job(layout, "image_text", names.IMAGE_TEXT_PIPELINE_JOB))
        outcome.update(launch.run_partitioned_job(layout, "video", names.VIDEO_PIPELINE_JOB))

    report = build_report(Storage(layout.storage))
    print("\n" + report.markdown())
    con = connect(layout.storage)
    top = con.execute(
        "SELECT reason, count(*) AS rows FROM rejected_heuristic_filtered GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
    ).fetchall()
    print("Top heuristic removal reasons (via DuckDB):")
    for reason, n in top:
        print(f"  {n:6d}  {reason}")
    print("\nRuns:")
    for name, ok in outcome.items():
        print(f"  {'ok    ' if ok else 'FAILED'} {name}")
    failed = [k for k, ok in outcome.items() if not ok]
    home = layout.home
    print(f"""
Where to look
  data        {home}/storage/<asset>/<source>.parquet
  rejected    {home}/storage/rejected/<asset>/<source>.parquet   (column 'reason')
  report      {home}/reports/corpus_report.md
  SFT         {home}/storage/sft_selected/<source>.parquet
  training    {home}/storage/training_schedule/training_schedule.parquet (+ shards/ for the loader)
  tokens      {home}/storage/training_tokens/ (Megatron .bin/.idx, litdata; refinery trace --step 0)
  images      {home}/storage/clip_filtered/<source>.parquet   (contact sheets in the Dagster UI)
  keyframes   {home}/storage/video_keyframes/<source>/<video>/*.jpg + <source>.parquet
  SQL         .venv/bin/refinery sql "SELECT source, count(*) FROM pretrain_corpus GROUP BY 1"
  DuckDB      {home}/reports/catalog.duckdb
  Dagster UI  DAGSTER_HOME={dagster_home} .venv/bin/dagster dev   (then http://127.0.0.1:3000)
  Dagster log {launch.log_file(layout)}
""")
    if failed:
        print(f"FAILED: {failed}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refinery", description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None, help="REFINERY_HOME (default: $REFINERY_HOME or ./.refinery)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("init", help="create the home folders and the Dagster instance config").set_defaults(
        func=cmd_init
    )
    p = sub.add_parser("demo", help="sample + whole pipeline + where to look")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("partitions", help="add partitions for new inbox sources (what the sensor does)")
    p.add_argument("--kind", default="text")
    p.set_defaults(func=cmd_partitions)
    p = sub.add_parser("run", help="materialize a pipeline for inbox sources (text: then the report)")
    p.add_argument("--kind", default="text", choices=sorted(KINDS))
    p.add_argument(
        "--source",
        action="append",
        help="only this source (repeatable; run in the order given, since dedup keeps first copies)",
    )
    p.add_argument("--no-report", action="store_true")
    p.add_argument(
        "--train-models",
        action="store_true",
        help="retrain reference_lm and quality_classifier (text; default: only when missing)",
    )
    p.set_defaults(func=cmd_run)
    add_file_commands(sub)
    from refinery_cli.mcp_server.command import add_mcp_parser

    add_mcp_parser(sub)  # refinery mcp [--transport stdio|http] [--root DIR]… [--allow-runs]
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
