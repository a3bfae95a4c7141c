"""The kernel's contracts: it imports no domain or engine, a pipeline's order fills each stage's
upstream, a processor's hooks are declared (never looked up), and every engine keeps one protocol."""

import ast
from pathlib import Path

import pandas as pd
import pytest

from refinery.batch import keep_all
from refinery.engine.local import LocalEngine
from refinery.kernel.pipeline import chain
from refinery.kernel.processor import FunctionProcessor, StageProcessor, as_processor, routed_input
from refinery.kernel.spec import Engine, StageSpec

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {p.name for p in (ROOT / "refinery").iterdir() if (p / "__init__.py").exists()}


def test_the_kernel_imports_no_domain_package_and_no_engine():
    found = []
    for path in (ROOT / "refinery" / "kernel").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                if parts[0] == "refinery" and len(parts) > 1 and parts[1] in PACKAGES - {"kernel"}:
                    found.append(f"{path.name}: {name}")
    assert found == []


def _spec(name: str, **kw) -> StageSpec:
    return StageSpec(name=name, kind="text", description=name, **kw)


def test_chain_fills_upstreams_from_the_order_skipping_side_tables_and_keeping_given_ones():
    raw, a, side, b, beside = (
        _spec("raw"),
        _spec("a"),
        _spec("side", side_table=True),
        _spec("b"),
        _spec("beside", upstream="raw"),
    )
    stages = chain(raw, a, side, b, beside)
    assert [s.upstream for s in stages] == [None, "raw", "a", "a", "raw"]
    with pytest.raises(ValueError, match="ingest stage"):
        chain(_spec("x", upstream="raw"))
    with pytest.raises(ValueError, match="one inbox kind"):
        chain(_spec("r"), StageSpec(name="s", kind="sft", description=""))


class _Routed(StageProcessor):
    def __call__(self, frame: pd.DataFrame):
        return keep_all(frame)

    def route(self, frame: pd.DataFrame):
        return frame["n"] > 1


def test_processor_hooks_are_declared_and_a_plain_function_gets_the_defaults():
    frame = pd.DataFrame({"n": [1, 2, 3]})
    wrapped = as_processor(keep_all)
    assert isinstance(wrapped, FunctionProcessor) and wrapped.report() == {} and wrapped.summary() == {}
    assert routed_input(wrapped, frame)[1] == 0
    taken, routed = routed_input(as_processor(_Routed()), frame)
    assert list(taken["n"]) == [2, 3] and routed == 1

    class Undeclared:
        def __call__(self, frame):
            return keep_all(frame)

        def report(self) -> dict:
            return {"lost": 1}

    with pytest.raises(TypeError, match=r"derive it from refinery\.kernel\.processor\.StageProcessor"):
        as_processor(Undeclared())


def test_every_engine_keeps_the_engine_protocol():
    from refinery.engine.ray_engine import RayEngine

    for engine in (LocalEngine, RayEngine):
        missing = [m for m in Engine.__annotations__ if not hasattr(engine, m)]
        missing += [m for m, v in vars(Engine).items() if callable(v) and not m.startswith("_")
                    and not callable(getattr(engine, m, None))]  # fmt: skip
        assert missing == [], engine
    assert LocalEngine.distributed is False and RayEngine.distributed is True
    # No engine method hands a partition's rows back to the caller's process (issue 18: the driver
    # holds per-part metadata only); the removed driver-side paths stay removed.
    for gone in ("map_slices", "map_groups"):
        assert not any(hasattr(engine, gone) for engine in (Engine, LocalEngine, RayEngine)), gone
