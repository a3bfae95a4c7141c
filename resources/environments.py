"""One function builds every resource for an environment, so definitions, the CLI and the tests
run the same graph with the same resources and differ only where an environment must.

- ``local`` (the default): data under ``$REFINERY_HOME`` (``./.refinery`` when unset), dedup
  indexes in local files, models on whatever device torch finds.
- ``cluster``: the dedup indexes in the Redis named by ``$REFINERY_REDIS_URL`` (shared by every
  machine; ``$REFINERY_DEDUP_BACKEND=redis-cluster`` when that URL names a node of a Redis
  Cluster, so claims spread over its shards), models on the GPU when the step has one.

Settings that come from the environment stay ``EnvVar`` references where they are set, so the
Dagster UI shows which variable a value comes from rather than its value.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from refinery.paths import HOME_ENV, STORAGE_ROOT_ENV
from resources.clip import ClipResource
from resources.compute import ComputeResource
from resources.dedup_index import DedupIndexResource
from resources.embedder import EmbedderResource
from resources.engine import EngineResource
from resources.home import RefineryHome
from resources.kenlm import KenLMResource
from resources.language_routing import LanguageRoutingResource
from resources.llm import BASE_URL_ENV, MODEL_ENV, LlmResource
from resources.quality import QualityClassifierResource

ENVIRONMENTS = ("local", "cluster")
ENVIRONMENT_ENV = "REFINERY_ENVIRONMENT"
REDIS_URL_ENV = "REFINERY_REDIS_URL"
DEDUP_BACKEND_ENV = "REFINERY_DEDUP_BACKEND"


def _from_env(name: str, default: str = "") -> str | dg.EnvVar:
    """An ``EnvVar`` when the variable is set (shown as such in the UI), else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def build_resources(
    environment: str | None = None,
    *,
    home: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    dataloader_workers: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Every resource the assets use, for ``environment`` (default ``$REFINERY_ENVIRONMENT`` or
    ``local``). ``home``, ``device``, ``batch_size`` and ``dataloader_workers`` override the
    environment's; any resource can be replaced by passing it by key (``dedup_index=...``)."""
    environment = environment or current_environment()
    if environment not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {environment!r}; choose one of {ENVIRONMENTS}")
    compute_args: dict[str, Any] = {"device": device or "auto"}
    if batch_size is not None:
        compute_args["batch_size"] = batch_size
    if dataloader_workers is not None:
        compute_args["dataloader_workers"] = dataloader_workers
    compute = ComputeResource(**compute_args)  # one device setting shared by every model resource
    if environment == "cluster":
        dedup = DedupIndexResource(
            backend=_from_env(DEDUP_BACKEND_ENV, "redis"),
            redis_url=_from_env(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"),
        )
    else:
        dedup = DedupIndexResource()
    resources: dict[str, Any] = {
        "refinery": RefineryHome(
            home=home if home is not None else _from_env(HOME_ENV), storage_root=_from_env(STORAGE_ROOT_ENV)
        ),
        "dedup_index": dedup,
        "compute": compute,
        "embedder": EmbedderResource(compute=compute),
        "kenlm": KenLMResource(),
        "quality_model": QualityClassifierResource(),
        "clip": ClipResource(compute=compute),
        "engine": EngineResource(),
        "language_routing": LanguageRoutingResource(),
        "llm": LlmResource(base_url=_from_env(BASE_URL_ENV), model=_from_env(MODEL_ENV)),
    }
    unknown = set(overrides) - set(resources)
    if unknown:
        raise KeyError(f"no resource named {sorted(unknown)}; resources are {sorted(resources)}")
    resources.update({k: v for k, v in overrides.items() if v is not None})
    return resources


def current_environment() -> str:
    return os.environ.get(ENVIRONMENT_ENV) or "local"


def build_executor(environment: str | None = None) -> dg.ExecutorDefinition:
    """How a run executes its steps. ``local``: in the run's own process, one step after another
    (a step costs no process start and no re-import of the definitions, which dominates chains of
    short steps on a laptop); ``cluster``: a process per step, so steps of one run use many cores
    (with the k8s run launcher, give the cluster ``k8s_job_executor`` in dagster.yaml-driven
    deployments: one pod per step)."""
    environment = environment or current_environment()
    return dg.in_process_executor if environment == "local" else dg.multiprocess_executor
