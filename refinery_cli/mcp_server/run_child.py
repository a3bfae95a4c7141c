"""One run on the persistent Dagster instance, in a process of its own (what ``materialize`` starts).

``python -m refinery_cli.mcp_server.run_child --job J --run-id R [--stage S] [--partition P] [--config JSON]``
executes the job (or the one stage of the asset job) with the id the server chose, so the run shows
in the Dagster UI and its status, events and logs are read from the instance while it runs.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--stage", action="append", default=[])
    parser.add_argument("--partition")
    parser.add_argument("--config", default="{}")
    args = parser.parse_args(argv)

    import dagster as dg

    from definitions import defs
    from refinery.paths import Layout
    from refinery_cli import launch

    launch.prepare_environment(Layout.at())
    job = defs.resolve_job_def(args.job)
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            run_config=json.loads(args.config),
            instance=instance,
            partition_key=args.partition,
            raise_on_error=False,
            asset_selection=[dg.AssetKey(s) for s in args.stage] or None,
            run_id=args.run_id,
            tags={"refinery/launched_by": "refinery mcp"},
        )
    print(f"run {args.run_id} {'succeeded' if result.success else 'failed'}", flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
