"""Where the batch stages run: in-process (``local``, the default) or on a Ray cluster (``ray``)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from refinery.engine.local import LocalEngine
from refinery.kernel.spec import Engine

ENGINES = ("local", "ray")


class EngineResource(dg.ConfigurableResource):
    """``kind: local`` streams every partition in the step's own process and needs nothing
    installed. ``kind: ray`` splits the stages that decide each row alone (cleaning, rule filters,
    perplexity and classifier scoring, …) over the Ray cluster at ``address`` and writes the
    partition as part files; the other stages run in the step's process either way. Ray is the
    ``ray`` extra (``scripts/setup.sh dev`` installs it)."""

    kind: str = Field("local", description="'local' (in-process) or 'ray'.")
    address: str = Field(
        "auto",
        description="Ray cluster: 'auto' ($RAY_ADDRESS or this machine's cluster), 'ray://host:10001' "
        "(Ray Client), 'host:port' (a head node's GCS), or 'local' (start one in the step's process).",
    )
    workers: int | None = Field(None, description="Actors per stage (default: one per cluster CPU).")
    slice_rows: int = Field(20_000, description="Rows per slice, task and part file.")
    num_cpus: int | None = Field(None, description="CPUs of the cluster started for address 'local'.")
    connect_timeout_s: float = Field(10.0, description="How long to try to reach the cluster.")
    node_ip_address: str | None = Field(
        None, description="This machine's address in the cluster (e.g. 127.0.0.1 for a loopback cluster)."
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Fail the step before it writes anything when the Ray cluster does not answer."""
        self.engine().check_reachable()

    def engine(self) -> Engine:
        """The library engine (:class:`refinery.kernel.spec.Engine`): a plain object that runs
        in this process or talks to the cluster."""
        if self.kind not in ENGINES:
            raise ValueError(f"unknown engine {self.kind!r}; choose one of {ENGINES}")
        if self.kind == "local":
            return LocalEngine()
        from refinery.engine.ray_engine import RayEngine

        return RayEngine(
            address=self.address,
            workers=self.workers,
            slice_rows=self.slice_rows,
            num_cpus=self.num_cpus,
            connect_timeout_s=self.connect_timeout_s,
            node_ip_address=self.node_ip_address,
        )
