"""Training with data selection that adapts to the model: online DoReMi weights vs the static mixture.

Four domains that differ in difficulty, all built on this machine (no downloads):

- ``prose``: the project's generated articles (``refinery.sample.prose``): a sentence grammar over
  topic vocabularies, learnable but varied;
- ``licenses``: the Debian ``copyright`` files under /usr/share/doc (real, very repetitive legal
  text: easy), or, where that folder is missing, the standard library's own source code;
- ``docstrings``: the standard library's docstrings, read by introspection (real technical prose);
- ``noise``: base64 of random bytes (embedded blobs in crawled pages): nothing to learn beyond the
  alphabet, about ln 64 = 4.16 nats per byte for any model.

Each domain's text is cut into documents of ``seq_len + 1`` bytes, so a document is one training
sequence and both runs see exactly the same number of tokens. The corpus, a uniform mixture
(the same number of documents per domain, as DoReMi's reference) ordered by the project's
``order_mixture`` and written as schedule shards by ``write_shards``, is what both runs read:

1. **static**: ``ScheduleDataset`` in schedule order for ``--steps`` steps. This run is also the
   *reference*: its final held-out loss per domain is what the adaptive run's excess is measured
   against (DoReMi trains its reference on the uniform mixture too).
2. **adaptive**: the same model from the same initialisation, the same steps and batch, reading
   the same shards through ``ScheduleDataset(feedback=...)``; after every step the loop reports
   each example's loss to ``OnlineDoremi``, whose weights the DataLoader worker (another process)
   follows from ``lag`` + 1 steps later.

It prints the weight trajectory and validation losses and writes a PNG (``--plot``) and JSON
(``--out``). Whether adaptive wins depends on scale; the numbers say, either way.

    OMP_NUM_THREADS=2 PYTHONPATH=. python examples/adaptive_training.py --plot benchmarks/out/adaptive.png
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import importlib
import inspect
import io
import json
import math
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.mixing.doremi import DoremiParams, _model
from refinery.sample import prose
from refinery.schedule.adaptive import AdaptiveParams, OnlineDoremi, log_path
from refinery.schedule.loader import ScheduleReader
from refinery.schedule.order import ScheduleParams, eval_order, order_mixture
from refinery.schedule.shards import write_shards
from refinery.storage import Storage

STDLIB = [
    "argparse",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "dis",
    "doctest",
    "email",
    "enum",
    "filecmp",
    "fileinput",
    "fnmatch",
    "fractions",
    "functools",
    "gettext",
    "glob",
    "graphlib",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html.parser",
    "http.client",
    "imaplib",
    "importlib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "locale",
    "logging",
    "lzma",
    "mailbox",
    "mimetypes",
    "multiprocessing",
    "numbers",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pickle",
    "pkgutil",
    "platform",
    "poplib",
    "pprint",
    "queue",
    "random",
    "re",
    "reprlib",
    "sched",
    "secrets",
    "selectors",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "sysconfig",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "tomllib",
    "traceback",
    "types",
    "typing",
    "unittest",
    "urllib.parse",
    "uuid",
    "warnings",
    "weakref",
    "xml.etree.ElementTree",
    "zipfile",
    "zoneinfo",
]


# -- the four domains -------------------------------------------------------------------------------


def _ascii(text: str) -> str:
    return " ".join(text.encode("ascii", "ignore").decode().replace("\x00", " ").split(" "))


def prose_text(limit: int, seed: int) -> str:
    rng, parts, size = random.Random(seed), [], 0
    while size < limit:
        parts.append(prose.article(rng))
        size += len(parts[-1]) + 2
    return "\n\n".join(parts)


def license_text(limit: int) -> tuple[str, str]:
    """Unique Debian copyright files, in path order; the stdlib's source where there are none."""
    seen, parts, size = set(), [], 0
    for path in sorted(Path("/usr/share/doc").glob("*/copyright")):
        try:
            text = path.read_text(encoding="utf-8", errors="ignore")
        except OSError:
            continue
        digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
        if digest in seen:
            continue
        seen.add(digest)
        parts.append(text)
        size += len(text)
        if size >= limit:
            return "\n\n".join(parts), "/usr/share/doc/*/copyright"
    if size >= limit // 2:
        return "\n\n".join(parts), "/usr/share/doc/*/copyright"
    return stdlib_source(limit), "standard library source (no /usr/share/doc here)"


def stdlib_source(limit: int) -> str:
    parts, size = [], 0
    for name in STDLIB:
        module = _import(name)
        if module is None:
            continue
        with contextlib.suppress(OSError, TypeError):
            parts.append(inspect.getsource(module))
            size += len(parts[-1])
        if size >= limit:
            break
    return "\n\n".join(parts)


def _import(name: str):
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except Exception:
            return None


def docstring_text(limit: int) -> str:
    """Docstrings of the standard library's modules, classes, functions and methods (pydoc's view)."""
    seen, parts, size = set(), [], 0
    for name in STDLIB:
        module = _import(name)
        if module is None:
            continue
        objects = [module]
        for _, member in inspect.getmembers(module):
            if getattr(member, "__module__", None) == module.__name__:
                objects.append(member)
                if inspect.isclass(member):
                    objects += [m for _, m in inspect.getmembers(member) if inspect.isfunction(m)]
        for obj in objects:
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 80 and doc not in seen:
                seen.add(doc)
                parts.append(doc)
                size += len(doc)
        if size >= limit:
            break
    return "\n\n".join(parts)


def noise_text(limit: int, seed: int) -> str:
    raw = base64.b64encode(np.random.default_rng(seed).bytes(limit * 3 // 4 + 3)).decode()
    return "\n".join(raw[i : i + 76] for i in range(0, len(raw), 76))


def domain_documents(seq_len: int, per_domain: int, seed: int) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Each domain's text cut into documents of seq_len + 1 ASCII bytes."""
    size = (seq_len + 1) * per_domain
    licenses, licenses_from = license_text(size)
    texts = {
        "prose": prose_text(size, seed),
        "licenses": licenses,
        "docstrings": docstring_text(size),
        "noise": noise_text(size, seed),
    }
    origin = {
        "prose": "refinery.sample.prose.article",
        "licenses": licenses_from,
        "docstrings": "standard library docstrings (inspect.getdoc)",
        "noise": "base64 of random bytes",
    }
    docs = {}
    for name, text in texts.items():
        flat = _ascii(text)
        n = len(flat) // (seq_len + 1)
        docs[name] = [flat[i * (seq_len + 1) : (i + 1) * (seq_len + 1)] for i in range(n)]
        if n < per_domain:
            print(f"note: domain {name} has {n} documents of the {per_domain} asked for")
    return docs, origin


def build_schedule(
    home: Path, docs: dict[str, list[str]], train_per_domain: int, held_out: int, g: int, seed: int
):
    """Corpus partitions, a uniform mixture ordered by ``order_mixture`` (strategy mixing), held-out
    documents in a validation split, and the shards: the project's own schedule format."""
    storage = Storage(home / "storage")
    rows = []
    for name, texts in docs.items():
        path = storage.path("pretrain_corpus", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        ids = [f"{name}-{i}" for i in range(len(texts))]
        pq.write_table(pa.table({"id": ids, "text": texts, "source": [name] * len(texts)}), path)
        n_train = min(train_per_domain, len(texts) - held_out)
        for i in range(n_train + held_out):
            rows.append(
                {
                    "domain": name,
                    "source": name,
                    "id": ids[i],
                    "epoch": 0,
                    "tokens": len(texts[i]),
                    "split": "train" if i < n_train else "validation",
                }
            )
    table = pd.DataFrame(rows)
    params = ScheduleParams(strategy="mixing", docs_per_step=g, seed=seed)
    train = order_mixture(table[table["split"] == "train"].reset_index(drop=True), params).assign(
        split="train"
    )
    held = eval_order(table[table["split"] == "validation"][["domain", "source", "id", "tokens"]], seed + 1)
    held = held.assign(split="validation", step=held["position"] // g, difficulty=np.nan)
    manifest = pd.concat([train, held], ignore_index=True)
    manifest["shard"] = (manifest["position"] // params.shard_docs).astype(np.int32)
    manifest = manifest.astype(
        {
            "position": "int64",
            "step": "int64",
            "phase": "int32",
            "epoch": "int32",
            "replay": "bool",
            "tokens": "int64",
            "difficulty": "float64",
        }
    )
    root = home / "storage" / "training_schedule"
    root.mkdir(parents=True, exist_ok=True)
    write_shards(
        storage,
        pa.Table.from_pandas(manifest, preserve_index=False),
        root,
        g,
        params.shard_docs,
        params.row_group_docs,
        split_names=["train", "validation"],
    )
    return root


# -- training -----------------------------------------------------------------------------------------


class ByteBatch:
    """collate_fn for ScheduleDataset (module level: it travels to the worker processes)."""

    def __init__(self, seq_len: int):
        self.seq_len = seq_len

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        block = np.zeros((len(rows), self.seq_len + 1), np.int64)
        for i, row in enumerate(rows):
            data = np.frombuffer(row["text"].encode()[: self.seq_len + 1], np.uint8)
            block[i, : len(data)] = data
        tokens = torch.from_numpy(block)
        return {
            "x": tokens[:, :-1],
            "y": tokens[:, 1:],
            "domain": [r["domain"] for r in rows],
            "step": torch.tensor([r["step"] for r in rows]),
        }


def per_example_loss(model, x, y):
    import torch.nn.functional as F

    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1), reduction="none").view(y.shape).mean(1)


def evaluate(model, held_out: dict[str, tuple], domains: list[str]) -> dict[str, float]:
    import torch

    model.eval()
    with torch.no_grad():
        out = {d: float(per_example_loss(model, *held_out[d]).mean()) for d in domains}
    model.train()
    return out


def train(args, root: Path, held_out, domains, feedback: Path | None, reference=None) -> dict:
    import torch

    from refinery.schedule.loader import ScheduleDataset

    torch.manual_seed(args.seed)
    model = _model(DoremiParams(seq_len=args.seq_len, d_model=args.d_model, n_layers=args.layers, n_heads=4))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / 20) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
        ),
    )
    mixer = None
    if feedback is not None:
        params = AdaptiveParams(
            lag=args.lag,
            eta=args.eta,
            smoothing=args.smoothing,
            excess_ema=args.excess_ema,
            initial="schedule",
        )
        mixer = OnlineDoremi.for_schedule(root, "train", feedback, params, reference_loss=reference)
    data = ScheduleDataset(
        root,
        "train",
        batch_size=args.docs_per_step,
        columns=["domain", "text", "step"],
        collate_fn=ByteBatch(args.seq_len),
        feedback=feedback,
        steps=args.steps if feedback is not None else None,
    )
    history, seen = [], {d: 0 for d in domains}
    started = time.perf_counter()
    for i, batch in enumerate(data.loader(num_workers=args.workers)):
        if i == args.steps:
            break
        losses = per_example_loss(model, batch["x"], batch["y"])
        loss = losses.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        for d in batch["domain"]:
            seen[d] += 1
        if mixer is not None:
            mixer.update(int(batch["step"][0]), batch["domain"], losses.detach())
        if (i + 1) % args.eval_every == 0 or i + 1 == args.steps:
            val = evaluate(model, held_out, domains)
            history.append(
                {
                    "step": i + 1,
                    "validation": val,
                    "mean": float(np.mean(list(val.values()))),
                    "seen": dict(seen),
                }
            )
            print(
                f"  step {i + 1:4d}  train {loss.item():.3f}  validation mean {history[-1]['mean']:.4f}  "
                + "  ".join(f"{d} {v:.3f}" for d, v in val.items()),
                flush=True,
            )
    if mixer is not None:
        mixer.close()
    return {"history": history, "seconds": time.perf_counter() - started, "seen": seen}


# -- report -------------------------------------------------------------------------------------------


def plot(path: Path, domains, trajectory, static, adaptive, initial) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), dpi=100)
    steps = [0] + [e["effective"] for e in trajectory]
    weights = np.array([initial] + [e["weights"] for e in trajectory])
    for j, d in enumerate(domains):
        axes[0].step(steps, weights[:, j], where="post", label=d)
    axes[0].set(title="Domain weights the loader follows", xlabel="step", ylabel="weight")
    axes[0].legend(fontsize=8)
    excess = np.array([e["excess"] for e in trajectory])
    for j, d in enumerate(domains):
        axes[1].plot([e["step"] for e in trajectory], excess[:, j], label=d, linewidth=1)
    axes[1].set(title="Excess loss vs reference (nats/byte)", xlabel="step", ylabel="max(loss − ref, 0)")
    axes[1].legend(fontsize=8)
    for name, run in (("static", static), ("adaptive", adaptive)):
        axes[2].plot(
            [h["step"] for h in run["history"]],
            [h["mean"] for h in run["history"]],
            marker="o",
            markersize=3,
            label=name,
        )
    axes[2].set(title="Validation loss, mean over domains", xlabel="step", ylabel="nats/byte")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--docs-per-step", type=int, default=32, help="sequences per step (one batch)")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--lag", type=int, default=2, help="steps before an update is used (≥ prefetch)")
    parser.add_argument("--eta", type=float, default=AdaptiveParams().eta)
    parser.add_argument("--smoothing", type=float, default=AdaptiveParams().smoothing)
    parser.add_argument("--excess-ema", type=float, default=AdaptiveParams().excess_ema)
    parser.add_argument("--held-out", type=int, default=96, help="validation documents per domain")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (cap; the worker process uses another core)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--home", type=Path, default=None, help="where the corpus and shards go (default: temp)"
    )
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/out/adaptive_training.png"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/adaptive_training.json"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    per_domain = args.steps * args.docs_per_step // 4
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp)
        docs, origin = domain_documents(args.seq_len, per_domain + args.held_out, args.seed)
        root = build_schedule(home, docs, per_domain, args.held_out, args.docs_per_step, args.seed)
        domains = sorted(docs)
        print(
            f"corpus and schedule in {time.perf_counter() - started:.1f}s: "
            + ", ".join(f"{d} ({len(docs[d])} docs: {origin[d]})" for d in domains)
        )
        collate = ByteBatch(args.seq_len)
        rows = list(
            ScheduleReader(root, "validation", columns=["domain", "text", "step"], last_step="uneven")
        )
        held_out = {}
        for d in domains:
            batch = collate([r for r in rows if r["domain"] == d])
            held_out[d] = (batch["x"], batch["y"])

        print("static (uniform schedule; also the reference):")
        static = train(args, root, held_out, domains, feedback=None)
        reference = static["history"][-1]["validation"]
        print("adaptive (online DoReMi against the static run's held-out losses):")
        adaptive = train(args, root, held_out, domains, feedback=home / "feedback", reference=reference)
        trajectory = [json.loads(x) for x in log_path(home / "feedback", 0).read_text().splitlines()[1:]]
        header = json.loads(log_path(home / "feedback", 0).read_text().splitlines()[0])

    final_s, final_a = static["history"][-1], adaptive["history"][-1]
    tokens = args.steps * args.docs_per_step * args.seq_len
    mean_w = np.mean([e["weights"] for e in trajectory], axis=0)
    mean_excess = np.mean([e["excess"] for e in trajectory], axis=0)
    print(
        f"\nsame budget: {args.steps} steps × {args.docs_per_step} sequences × {args.seq_len} bytes = "
        f"{tokens:,} tokens each"
    )
    print(
        f"{'domain':12s} {'mean excess':>11s} {'initial':>8s} {'mean w':>8s} {'final w':>8s} "
        f"{'docs static':>12s} {'docs adapt':>11s} {'val static':>11s} {'val adapt':>10s}"
    )
    for j, d in enumerate(domains):
        print(
            f"{d:12s} {mean_excess[j]:11.4f} {header['initial'][j]:8.3f} {mean_w[j]:8.3f} "
            f"{trajectory[-1]['weights'][j]:8.3f} {static['seen'][d]:12d} {adaptive['seen'][d]:11d} "
            f"{final_s['validation'][d]:11.4f} {final_a['validation'][d]:10.4f}"
        )
    tenths = [trajectory[min(len(trajectory) - 1, i * len(trajectory) // 10)] for i in range(10)]
    print("weights at each tenth of training (" + ", ".join(domains) + "):")
    for e in tenths:
        print(f"  step {e['effective']:4d}: " + " ".join(f"{w:.3f}" for w in e["weights"]))
    learnable = [d for d in domains if d != "noise"]
    summary = {
        "validation_mean_static": final_s["mean"],
        "validation_mean_adaptive": final_a["mean"],
        "validation_worst_static": max(final_s["validation"].values()),
        "validation_worst_adaptive": max(final_a["validation"].values()),
        "validation_mean_learnable_static": float(np.mean([final_s["validation"][d] for d in learnable])),
        "validation_mean_learnable_adaptive": float(np.mean([final_a["validation"][d] for d in learnable])),
    }
    summary["highest_mean_excess"] = domains[int(mean_excess.argmax())]
    summary["largest_mean_weight"] = domains[int(mean_w.argmax())]
    summary["smallest_mean_weight"] = domains[int(mean_w.argmin())]
    print(
        f"highest mean excess: {summary['highest_mean_excess']}; largest mean weight: "
        f"{summary['largest_mean_weight']}; smallest: {summary['smallest_mean_weight']} "
        f"(lowest mean excess: {domains[int(mean_excess.argmin())]})"
    )
    for key, value in summary.items():
        if isinstance(value, float):
            print(f"{key:38s} {value:.4f}")
    better = summary["validation_mean_adaptive"] < summary["validation_mean_static"]
    print(
        f"adaptive {'beats' if better else 'does not beat'} static on mean validation loss "
        f"({summary['validation_mean_adaptive']:.4f} vs {summary['validation_mean_static']:.4f}); "
        f"seconds: static {static['seconds']:.1f}, adaptive {adaptive['seconds']:.1f}, "
        f"total {time.perf_counter() - started:.1f}"
    )
    plot(args.plot, domains, trajectory, static, adaptive, header["initial"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "domains": domains,
                "origin": origin,
                "initial": header["initial"],
                "trajectory": trajectory,
                "static": static,
                "adaptive": adaptive,
                "summary": summary,
            },
            indent=1,
        )
    )
    print(f"plot: {args.plot}  numbers: {args.out}")


if __name__ == "__main__":
    sys.exit(main())
