"""The ``refinery`` command: set up a home, run the pipeline through Dagster, query with SQL.

This module sits above the library: the commands that drive Dagster (init, partitions, run,
demo) are here and import it lazily through ``launch``; the file-only commands (sample, status,
sql, index) come from :mod:`refinery.cli`, which never imports Dagster.
"""

from __future__ import annotations

import argparse
import sys

from refinery import names
from refinery.cli import add_commands, layout_of

# Inbox folders `refinery init` creates: the partitioned kinds, plus the reference corpus (KenLM,
# quality classifier) and the mixing target set.
INBOX_KINDS = (*names.PIPELINE_JOB_BY_KIND, "reference", "target")


def cmd_init(args: argparse.Namespace) -> int:
    import launch

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
    import launch

    layout = layout_of(args)
    launch.prepare_environment(layout)
    added = launch.sync_partitions(layout, args.kind)
    print(f"added partitions: {added}" if added else "no new sources")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import launch

    layout = layout_of(args)
    launch.prepare_environment(layout)
    print(f"full Dagster log: {launch.log_file(layout)}")
    if args.kind == "text":
        outcome = launch.run_text_pipeline(
            layout, args.source or None, report=not args.no_report, train_models=args.train_models or None
        )
    else:
        job = names.PIPELINE_JOB_BY_KIND[args.kind]
        outcome = launch.run_partitioned_job(layout, args.kind, job, args.source or None)
    failed = [name for name, ok in outcome.items() if not ok]
    print(f"{len(outcome) - len(failed)} of {len(outcome)} runs succeeded")
    print(f"full Dagster log: {launch.log_file(layout)}")
    for name in failed:
        print(f"  FAILED {name}")
    return 0 if not failed else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """Everything on the bundled samples, then where to look."""
    import launch
    from refinery.report import build_report
    from refinery.sample.bundle import text_source_order, write_missing_samples
    from refinery.sql import connect
    from refinery.storage import Storage

    layout = layout_of(args)
    dagster_home = launch.prepare_environment(layout)
    print(f"full Dagster log: {launch.log_file(layout)}")
    for kind, folder in write_missing_samples(layout, args.seed):
        print(f"bundled {kind} sample written to {folder}")
    outcome = launch.run_text_pipeline(layout, text_source_order(layout))
    outcome.update(launch.run_partitioned_job(layout, "sft", names.SFT_PIPELINE_JOB))
    outcome.update(launch.run_job(names.TRAINING_DATA_JOB, layout))
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
    p.add_argument("--kind", default="text", choices=sorted(names.PIPELINE_JOB_BY_KIND))
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
    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
