"""The ``refinery plan`` subcommand: sample the inbox, print what each stage needs on a cluster."""

from __future__ import annotations

import argparse
from pathlib import Path

from refinery.paths import Layout
from refinery.plan import Cluster, load_rates, plan_stages, render, sample_inbox, warnings_for

UNITS = {"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "pb": 1e15}


def parse_size(text: str) -> float:
    """``1TB``, ``500 GB``, ``2.5tb`` → bytes."""
    cleaned = text.strip().lower().replace(" ", "")
    for unit in sorted(UNITS, key=len, reverse=True):
        if cleaned.endswith(unit):
            return float(cleaned[: -len(unit)]) * UNITS[unit]
    return float(cleaned)


def add_plan_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="cores, memory, disk and hours per stage for the inbox on a target cluster"
    )
    p.add_argument("--kind", default="text")
    p.add_argument("--scale-to", help="plan for this much input instead of the inbox (e.g. 1TB), same mix")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--cores", type=int, default=16, help="cores per node")
    p.add_argument("--memory-gb", type=float, default=64.0, help="memory per node")
    p.add_argument("--slice-rows", type=int, default=20_000)
    p.add_argument("--rates", type=Path, default=None, help="folder of measured rates (benchmarks/rates)")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    from refinery.plan import default_rates

    layout = Layout.at(args.home)
    inbox = sample_inbox(layout.inbox_kind(args.kind))
    if not inbox.sources:
        print(
            f"nothing in {layout.inbox_kind(args.kind)}: add sources, or pass --scale-to with a sample there"
        )
        return 1
    scale = parse_size(args.scale_to) / max(inbox.bytes, 1) if args.scale_to else 1.0
    cluster = Cluster(args.nodes, args.cores, args.memory_gb, args.slice_rows)
    rates = load_rates(args.rates or default_rates())
    plans = plan_stages(
        round(inbox.documents * scale),
        round(inbox.bytes * scale),
        round(inbox.largest * scale),
        rates,
        cluster,
    )
    warnings = warnings_for(plans, cluster)
    print(render(inbox, scale, plans, warnings, cluster))
    return 0
