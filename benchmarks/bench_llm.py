"""The LLM client against a bare HTTP client on the same server, and a rerun of a finished
synthesis step.

Server: ``transformers serve`` on the project's tiny chat model (CPU, loopback; its text has no
quality: this measures the machinery). Prompts: the judge template over CPython module docstrings
from this machine (benchmarks/real_corpus.py), cut to ``--chars``. Greedy decoding, so both clients
make the server do the same work.

1. Requests/s and completion tokens/s at 1, 8 and 32 concurrent requests: our ``ChatClient``
   (cache off, so every request is sent; retries armed) against bare ``httpx.AsyncClient`` posts
   under an ``asyncio.Semaphore``, alternating, same request set.
   Each client runs ``--repeats`` times per level, alternating; the median run is reported.
2. ``llm_sft_synthesized`` materialized twice over one pretrain_corpus partition of the same texts:
   the rerun's cache hit rate, tokens sent and time, against the first run's.

    python -m benchmarks.bench_llm [--requests 64] [--docs 48]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def real_texts(count: int, chars: int) -> list[str]:
    from benchmarks.real_corpus import python_candidates

    texts = []
    for cand in python_candidates():
        text = cand.load()
        if text and len(text) > 200:
            texts.append(text[:chars])
        if len(texts) == count:
            break
    return texts


async def bare(url: str, bodies: list[dict], concurrency: int) -> tuple[float, int]:
    import httpx

    gate = asyncio.Semaphore(concurrency)
    tokens = 0
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:

        async def one(body: dict) -> int:
            async with gate:
                response = await http.post(url, json=body)
                response.raise_for_status()
                return response.json()["usage"]["completion_tokens"]

        started = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(b) for b in bodies)))
    return time.perf_counter() - started, tokens


def ours(base_url: str, model: str, requests: list, concurrency: int) -> tuple[float, int, int]:
    from refinery.llm.client import ChatClient
    from refinery.llm.endpoint import LlmEndpoint

    client = ChatClient(LlmEndpoint(base_url, model, max_concurrency=concurrency, timeout_s=300))
    started = time.perf_counter()
    results = client.complete(requests)
    seconds = time.perf_counter() - started
    return seconds, sum(r.tokens_out for r in results), sum(r.error is not None for r in results)


def throughput(server, texts: list[str], max_tokens: int, levels: list[int], repeats: int) -> list[dict]:
    from refinery.llm.client import ChatRequest
    from refinery.llm.prompts import JUDGE_DOCUMENT

    params = {"temperature": 0.0, "top_p": 1.0, "max_tokens": max_tokens}
    requests = [ChatRequest(JUDGE_DOCUMENT.render(text=t), params) for t in texts]
    bodies = [{"model": server.model, "messages": r.messages, **r.params} for r in requests]
    ours(server.base_url, server.model, requests[:4], 4)  # warm-up (model load, connections)
    rows = []
    for level in levels:
        bare_runs, our_runs = [], []
        for rep in range(repeats):  # alternating, the order flipped each time: load drifts hit both
            for which in ("bare", "ours") if rep % 2 == 0 else ("ours", "bare"):
                if which == "bare":
                    bare_runs.append(asyncio.run(bare(server.base_url + "/chat/completions", bodies, level)))
                else:
                    our_runs.append(ours(server.base_url, server.model, requests, level))
        b_s, b_tok = sorted(bare_runs)[len(bare_runs) // 2]
        o_s, o_tok, errors = sorted(our_runs)[len(our_runs) // 2]
        rows.append(
            {
                "concurrency": level,
                "requests": len(requests),
                "bare_req_s": len(requests) / b_s,
                "ours_req_s": len(requests) / o_s,
                "bare_tok_s": b_tok / b_s,
                "ours_tok_s": o_tok / o_s,
                "ours_errors": errors,
                "ours_vs_bare": b_s / o_s,
                "bare_seconds": [round(r[0], 2) for r in bare_runs],
                "ours_seconds": [round(r[0], 2) for r in our_runs],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def synthesis_rerun(server, texts: list[str]) -> dict:
    import dagster as dg
    import pandas as pd
    import pyarrow as pa

    from assets.llm import llm_sft_synthesized
    from refinery.paths import Layout
    from refinery.schema import DOCUMENT_SCHEMA
    from refinery.storage import Storage
    from resources import LlmResource, build_resources

    home = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    layout = Layout.at(home)
    frame = pd.DataFrame({"id": [f"py{i}" for i in range(len(texts))], "text": texts, "source": "py"})
    for column in ("url", "meta", "file"):
        frame[column] = None
    frame["line"] = 1
    rejected = pa.schema(
        [*DOCUMENT_SCHEMA, pa.field("reason", pa.string()), pa.field("reason_detail", pa.string())]
    )
    with Storage(layout.storage).writer("pretrain_corpus", "py", DOCUMENT_SCHEMA, rejected, {}) as writer:
        writer.write(frame, frame.iloc[:0].assign(reason=[], reason_detail=[]))
    llm = LlmResource(base_url=server.base_url, model=server.model, max_concurrency=8)
    config = {
        "ops": {
            "llm_sft_synthesized": {"config": {"temperature": 1.0, "max_tokens": 120, "max_input_chars": 400}}
        }
    }
    runs = []
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", ["py"])
        for _ in range(2):
            started = time.perf_counter()
            result = dg.materialize(
                [llm_sft_synthesized],
                partition_key="py",
                instance=instance,
                run_config=config,
                resources=build_resources("local", home=str(home), device="cpu", llm=llm),
            )
            seconds = time.perf_counter() - started
            meta = next(iter(result.get_asset_materialization_events())).materialization.metadata
            runs.append(
                {
                    "seconds": seconds,
                    "requests": meta["llm_requests"].value,
                    "cache_hit_rate": meta["llm_cache_hit_rate"].value,
                    "tokens_sent": meta["llm_tokens_in"].value + meta["llm_tokens_out"].value,
                    "pairs": meta["pairs_synthesized"].value,
                }
            )
            print(json.dumps(runs[-1]), flush=True)
    return {"first": runs[0], "rerun": runs[1]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--docs", type=int, default=48)
    parser.add_argument("--chars", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=3, help="runs per client and level (median kept)")
    args = parser.parse_args()

    from refinery.llm.local_server import start_transformers_serve
    from refinery.llm.tiny_chat_model import build

    texts = real_texts(max(args.requests, args.docs), args.chars)
    log = Path(tempfile.mkdtemp(prefix="bench-llm-serve-")) / "serve.log"
    server = start_transformers_serve(build(), log)
    try:
        levels = [int(x) for x in args.levels.split(",")]
        rows = throughput(server, texts[: args.requests], args.max_tokens, levels, args.repeats)
        rerun = synthesis_rerun(server, texts[: args.docs])
    finally:
        server.stop()
    print("\n| concurrency | requests | bare req/s | ours req/s | bare tok/s | ours tok/s | ours/bare |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['concurrency']} | {r['requests']} | {r['bare_req_s']:.1f} | {r['ours_req_s']:.1f} | "
            f"{r['bare_tok_s']:.0f} | {r['ours_tok_s']:.0f} | {r['ours_vs_bare']:.2f} |"
        )
    first, again = rerun["first"], rerun["rerun"]
    print(
        f"\nsynthesis over {first['requests']} documents: first run {first['seconds']:.1f}s "
        f"({first['tokens_sent']} tokens, hit rate {first['cache_hit_rate']:.0%}); "
        f"rerun {again['seconds']:.1f}s "
        f"(hit rate {again['cache_hit_rate']:.0%}, {again['tokens_sent']} tokens sent)"
    )


if __name__ == "__main__":
    main()
