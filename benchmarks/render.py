"""Renderers of the text benchmark's results: the RESULTS.md section and the console table."""

from __future__ import annotations

from collections import Counter

from benchmarks.harness import dps, mbps

LENGTH_EDGES = [1_000, 2_000, 4_000, 8_000, 16_000]  # bytes, for the article-length breakdown
NUM_PERM = 128
TARGET_CHAIN, TARGET_MINHASH, TARGET_RULE_CHAIN = 20.0, 5.0, 10.0  # the targets


def _bucket_label(i: int) -> str:
    lo = f"{LENGTH_EDGES[i - 1] / 1e3:g}" if i else "0"
    return f"≥ {lo} KB" if i == len(LENGTH_EDGES) else f"{lo}–{LENGTH_EDGES[i] / 1e3:g} KB"


def agreement(ours: dict, theirs: dict, kinds: dict) -> dict:
    ids = sorted(theirs)
    both_keep = both_remove = ours_only = theirs_only = 0
    pairs: Counter = Counter()
    by_kind: dict[str, Counter] = {}
    for doc_id in ids:
        a, b = ours[doc_id], theirs[doc_id]
        kind = by_kind.setdefault(kinds[doc_id], Counter())
        kind["docs"] += 1
        if a is None and b is None:
            both_keep += 1
        elif a is not None and b is not None:
            both_remove += 1
        else:
            if a is not None:
                ours_only += 1
            else:
                theirs_only += 1
            kind["disagree"] += 1
            pairs[(a or "keep", b or "keep")] += 1
    n = len(ids)
    return {
        "docs": n,
        "agree": (both_keep + both_remove) / n if n else float("nan"),
        "both_keep": both_keep,
        "both_remove": both_remove,
        "ours_remove_only": ours_only,
        "datatrove_remove_only": theirs_only,
        "pairs": [[a, b, c] for (a, b), c in pairs.most_common()],
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
    }


def _counts(c: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(c.items(), key=lambda kv: -kv[1]))


def _num(v) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def _reason_rows(run: dict) -> list[tuple[str, str, str]]:
    sizes = run.get("reason_bytes", {})
    return [
        (reason, f"{n:,}", f"{sizes.get(reason, 0) / 1e6:,.2f}")
        for reason, n in sorted(run["reasons"].items(), key=lambda kv: -kv[1])
    ]


def _fmt_mb(x: float) -> str:
    return f"{x:,.0f}"


def render(results: dict) -> str:
    """The Markdown section: machine, corpus, throughput, ratios, agreement, memory."""
    r = results["runs"]
    info, cfg = results["machine"], results["config"]
    full, sub = cfg["docs"], cfg["baseline_docs"]
    dt = r.get("datatrove_minhash", {})
    dt_hash = dt.get("hash_config", "its default HashConfig")
    dt_patch = (
        " Its default xxhash functions receive `str` shingles, which the installed xxhash rejects "
        "(xxhash ≥ 4: 'Strings must be encoded before hashing'), so the step's hash function was "
        "wrapped to UTF-8-encode each shingle first, as xxhash 3 did internally."
        if dt.get("hash_patched")
        else ""
    )
    lines = [
        f"## Text pipeline on the {cfg.get('corpus', 'generated')} corpus: cleaning, heuristic filters and "
        "fuzzy dedup vs datatrove and datasketch",
        "",
        f"Measured {results['date']} with `benchmarks/bench_text.py`, in one run:",
        "",
        f"    {results['command']}",
        "",
        f"Machine: {info['cpu']}, {info['usable_cpus']} usable of {info['logical_cpus']} logical CPUs, "
        + (f"{info['memory_gb']:.0f} GB RAM, " if info["memory_gb"] else "")
        + f"load average at start {', '.join(f'{x:.2f}' for x in info['load_average_at_start'])}; "
        f"Python {info['python']} ({info['platform']}). Packages: "
        + ", ".join(f"{k} {v}" for k, v in info["packages"].items())
        + ".",
        "",
        "### Corpus",
        "",
        results["corpus"],
        f"- Our components run on all {full:,} documents, streamed in batches of {cfg['batch_size']:,} "
        "(the pipeline's batch size). The baselines (datatrove, datasketch) run on a deterministic "
        f"uniform random subset of **{sub:,} documents** of the same corpus (`--baseline-docs`, seed "
        f"{cfg['seed']}); ours is also measured on that subset.",
        "",
        "### How it is measured",
        "",
        "- Each row is one fresh process (multiprocessing spawn) running alone, numeric libraries "
        "pinned to one thread. **Per core** = UTF-8 bytes (MB = 10⁶ bytes) or documents divided by "
        "the CPU seconds (user + system) of that process inside the timed section; wall seconds are "
        "shown too (on a busy machine they exceed CPU seconds). Reading Parquet is outside the timed "
        "sections (for datatrove's signature step, which pulls documents from a generator, the "
        "reading time is measured and subtracted).",
        "- Peak RSS is VmHWM of the process (interpreter, imports and warm-up included); "
        "'RSS after setup' is VmRSS after imports and warm-up, before the first document.",
        "- Ours: `filter_batch(frame, HeuristicParams(language_gate=False))` (datatrove has no "
        "language gate); `MinHasher(num_perm=128, ngram=5, seed=1).signatures(texts)`; "
        "`FuzzyDeduper(claims)(frame)` over a fresh `SqliteFuzzyIndex` (threshold 0.8: signatures, "
        "then per chunk of 1,000 documents one transaction of LSH lookup, verification, insert).",
        "- datatrove: `GopherQualityFilter()`, `GopherRepetitionFilter()`, `C4QualityFilter()` with "
        "default parameters, each document passed through `filter()` in that order and not passed on "
        "once removed (as in a pipeline; the pipeline's per-document stats bookkeeping is not "
        "included). `MinhashDedupSignature.run()` with `MinhashConfig(n_grams=5, num_buckets=16, "
        f"hashes_per_bucket=8, seed=1)` ({dt_hash}), writing and sorting its bucket files in a "
        f"temporary folder.{dt_patch}",
        *(
            [
                f"- datatrove's filter process used {dtc['rss_before_spacy_mb']:,.0f} MB after importing "
                f"datatrove and {dtc['rss_setup_mb']:,.0f} MB once its word tokenizer (spaCy's blank "
                "English pipeline) was loaded"
                + (
                    "; spaCy's thinc imported torch, which is installed here as a core dependency."
                    if dtc.get("imported_torch")
                    else "."
                )
            ]
            if (dtc := r.get("datatrove_chain"))
            else []
        ),
        "- datasketch: per document `MinHash(num_perm=128, seed=1)` then `update_batch` of "
        "`text.lower().split()` word 5-grams joined by spaces, encoded as UTF-8 (a document with "
        "fewer than 5 words is one shingle). The 'shared permutations' row passes "
        "`permutations=` from one template instead of generating them per document.",
        "",
        "### Throughput per core",
        "",
        "| component | documents | MB | CPU s | wall s | MB/s per core | docs/s per core "
        "| RSS after setup MB | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [
        ("ours: cleaning, `Cleaner` (all documents)", "ours_clean"),
        ("ours: cleaning (subset)", "ours_clean_subset"),
        ("reference: per-document cleaning, ftfy on every document (subset)", "clean_reference"),
        ("ours: rule-based chain clean → heuristics → exact → fuzzy (all documents)", "ours_rule_chain"),
        ("ours: rule-based chain (subset)", "ours_rule_chain_subset"),
        ("ours: heuristic chain (all documents)", "ours_chain"),
        ("ours: heuristic chain (subset)", "ours_chain_subset"),
        ("datatrove: Gopher quality → repetition → C4 (subset)", "datatrove_chain"),
        ("ours: MinHash signatures (all documents)", "ours_minhash"),
        ("ours: MinHash signatures (subset)", "ours_minhash_subset"),
        ("ours: fuzzy dedup end to end (all documents)", "ours_fuzzy"),
        ("datatrove: MinhashDedupSignature step (subset)", "datatrove_minhash"),
        ("datasketch: MinHash + update_batch per doc (subset)", "datasketch"),
        ("datasketch, shared permutations (subset)", "datasketch_shared_perm"),
        ("rensa RMinHash, same shingles (subset; a different hash family)", "rensa"),
    ]
    for label, key in rows:
        if key not in r:
            continue
        x = r[key]
        lines.append(
            f"| {label} | {x['docs']:,} | {x['bytes'] / 1e6:,.1f} | {x['cpu_s']:,.1f} | {x['wall_s']:,.1f} "
            f"| {mbps(x):,.2f} | {dps(x):,.0f} | {_fmt_mb(x['rss_setup_mb'])} | {_fmt_mb(x['peak_rss_mb'])} |"
        )
    if "datatrove_chain" in r:
        lines += ["", "datatrove per filter (each on the documents that reached it):", ""]
        lines += ["| datatrove filter | documents | MB | CPU s | MB/s per core | docs/s per core |"]
        lines += ["|---|---:|---:|---:|---:|---:|"]
        for name, m in r["datatrove_chain"]["per_filter"].items():
            lines.append(
                f"| {name} | {m['docs']:,} | {m['bytes'] / 1e6:,.1f} | {m['cpu_s']:,.1f} "
                f"| {mbps(m):,.2f} | {dps(m):,.0f} |"
            )
    if "clean_reference" in r and "ftfy_non_ascii" in r["clean_reference"]:
        f = r["clean_reference"]["ftfy_non_ascii"]
        lines += [
            "",
            f"ftfy alone on the {f['docs']:,} documents of the subset that are not pure ASCII "
            f"({f['bytes'] / 1e6:,.1f} MB): {f['bytes'] / 1e6 / f['cpu_s']:,.2f} MB/s per core."
            if f["cpu_s"]
            else "",
        ]
    for key in ("ours_rule_chain", "ours_rule_chain_subset"):
        if key in r:
            c = r[key]
            per = ", ".join(
                f"{name} {m['cpu_s']:,.1f} CPU s ({m['docs']:,} documents in)"
                for name, m in c["stages"].items()
            )
            lines += ["", f"{key}: {per}; documents left after each stage: {_counts(c['kept'])}."]
    if "ours_fuzzy" in r:
        f = r["ours_fuzzy"]
        lines += [
            "",
            f"Fuzzy dedup removed {f['removed']:,} of {f['docs']:,} documents "
            f"({_counts(f['removed_by_kind'])}); "
            f"index: {f['index_entries']:,} entries, SQLite file {f['index_file_mb']:,.1f} MB.",
        ]

    lines += ["", "### Ratios (per core)", ""]
    lines += [
        "| comparison | ours MB/s | baseline MB/s | ratio | target | result |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, a, b, target in ratio_rows(r):
        ratio = mbps(r[a]) / mbps(r[b])
        verdict = "" if target is None else ("meets target" if ratio >= target else "**falls short**")
        lines.append(
            f"| {label} | {mbps(r[a]):,.2f} | {mbps(r[b]):,.2f} | {ratio:,.1f}x "
            f"| {'' if target is None else f'≥ {target:g}x'} | {verdict} |"
        )

    if "agreement" in results:
        a = results["agreement"]
        lines += [
            "",
            "### Keep/remove agreement with datatrove",
            "",
            f"On the {a['docs']:,}-document subset, our chain and datatrove's make the same keep/remove "
            f"decision on **{a['agree']:.2%}** of documents: both keep {a['both_keep']:,}, both remove "
            f"{a['both_remove']:,}; only we remove {a['ours_remove_only']:,}, only datatrove removes "
            f"{a['datatrove_remove_only']:,}.",
            "",
        ]
        if a["pairs"]:
            lines += ["| our decision | datatrove's decision | documents |", "|---|---|---:|"]
            lines += [f"| {x} | {y} | {c:,} |" for x, y, c in a["pairs"][:20]]
            if len(a["pairs"]) > 20:
                lines.append(f"| … {len(a['pairs']) - 20} more pairs | | |")
            lines += ["", "Disagreements by generated document kind:", ""]
            lines += ["| kind | documents | disagreements |", "|---|---:|---:|"]
            lines += [
                f"| {k} | {v.get('docs', 0):,} | {v.get('disagree', 0):,} |"
                for k, v in a["by_kind"].items()
                if v.get("disagree")
            ]
        lines += ["", "Removal reasons on the subset (documents, MB of text):", ""]
        lines += ["| ours | documents | MB | datatrove | documents | MB |", "|---|---:|---:|---|---:|---:|"]
        ours_r = _reason_rows(r["ours_chain_subset"])
        their_r = _reason_rows(r["datatrove_chain"])
        for i in range(max(len(ours_r), len(their_r))):
            o = ours_r[i] if i < len(ours_r) else ("", "", "")
            t = their_r[i] if i < len(their_r) else ("", "", "")
            lines.append(f"| {' | '.join(o)} | {' | '.join(t)} |")

    if "ours_chain" in r:
        c = r["ours_chain"]
        removed_bytes = sum(c.get("reason_bytes", {}).values())
        lines += [
            "",
            f"Our chain on all {c['docs']:,} documents removed {c['docs'] - c['kept']:,} documents "
            f"({removed_bytes / 1e6:,.1f} MB, {removed_bytes / c['bytes']:.1%} of the bytes); documents "
            "removed by an earlier rule never reach the later ones, in both implementations:",
            "",
            "| reason | documents | MB |",
            "|---|---:|---:|",
            *[f"| {' | '.join(row)} |" for row in _reason_rows(c)],
        ]
        lines += _kind_lines(c)

    scaling = results.get("scaling", {})
    if scaling:
        lines += ["", "### Peak memory against corpus size", ""]
        lines += [
            "Each run in a fresh process on the first share of the corpus. The chain keeps nothing "
            "between batches; the dedup index grows with what it has seen (that growth is the index).",
            "",
            "| component | share | documents | RSS after setup MB | peak RSS MB | index entries "
            "| index file MB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for comp, runs in scaling.items():
            for share, x in sorted(runs.items(), key=lambda kv: float(kv[0])):
                entries = f"{x['index_entries']:,}" if "index_entries" in x else ""
                file_mb = f"{x['index_file_mb']:,.1f}" if "index_file_mb" in x else ""
                lines.append(
                    f"| {comp} | {float(share):.0%} | {x['docs']:,} | {_fmt_mb(x['rss_setup_mb'])} "
                    f"| {_fmt_mb(x['peak_rss_mb'])} | {entries} | {file_mb} |"
                )
        lines += ["", *_growth_lines(scaling)]
        smallest = min(x["docs"] for runs in scaling.values() for x in runs.values())
        if smallest < 4 * cfg["batch_size"]:
            lines.append(
                f"- The smallest share holds fewer than four batches of {cfg['batch_size']:,} documents, "
                "so part of the difference is the batch being filled, not the corpus size."
            )
    return "\n".join(lines) + "\n"


def _kind_lines(c: dict) -> list[str]:
    """Our decisions by generated document kind, and for articles by length."""
    if "by_kind" not in c:
        return []
    kinds: dict[str, Counter] = {}
    for kind, reason, n in c["by_kind"]:
        kinds.setdefault(kind, Counter())[reason] += n
    lines = [
        "",
        "By generated document kind (our chain, all documents):",
        "",
        "| kind | documents | removed | main reasons |",
        "|---|---:|---:|---|",
    ]
    for kind, counts in sorted(kinds.items(), key=lambda kv: -kv[1].total()):
        removed = counts.total() - counts["kept"]
        top = [(r, n) for r, n in counts.most_common() if r != "kept"][:3]
        lines.append(
            f"| {kind} | {counts.total():,} | {removed:,} ({removed / counts.total():.0%}) "
            f"| {', '.join(f'{r} {n:,}' for r, n in top)} |"
        )
    lengths: dict[int, Counter] = {}
    for bucket, what, n in c.get("article_length", []):
        lengths.setdefault(bucket, Counter())[what] += n
    if lengths:
        lines += ["", "Articles by length (our chain):", ""]
        lines += ["| length | articles | removed |", "|---|---:|---:|"]
        for bucket, counts in sorted(lengths.items()):
            lines.append(
                f"| {_bucket_label(bucket)} | {counts['docs']:,} "
                f"| {counts['removed']:,} ({counts['removed'] / counts['docs']:.0%}) |"
            )
    return lines


def _growth_lines(scaling: dict) -> list[str]:
    """Peak RSS change between the smallest and the largest share, per component."""
    out = []
    for comp, runs in scaling.items():
        ordered = sorted(runs.items(), key=lambda kv: float(kv[0]))
        if len(ordered) < 2:
            continue
        (s0, a), (s1, b) = ordered[0], ordered[-1]
        delta = round(b["peak_rss_mb"] - a["peak_rss_mb"]) + 0.0
        line = (
            f"- {comp}: peak RSS {delta:+,.0f} MB from {float(s0):.0%} ({a['docs']:,} documents) to "
            f"{float(s1):.0%} ({b['docs']:,} documents)"
        )
        entries = b.get("index_entries", 0) - a.get("index_entries", 0)
        if entries > 0:
            line += (
                f", for {entries:,} more index entries: {delta * 1024 / entries:,.1f} KB of RSS per entry "
                f"(the signature itself is {NUM_PERM * 4} bytes; the SQLite file "
                f"{(b['index_file_mb'] - a['index_file_mb']) * 1e3 / entries:,.2f} KB per entry)"
            )
        out.append(line + ".")
    return out


def ratio_rows(r: dict) -> list[tuple[str, str, str, float | None]]:
    """(label, ours, baseline, target): ratios on the same documents first; the headline MinHash
    ratio divides ours by datasketch on the same subset (not ours on the whole corpus)."""
    candidates = [
        ("cleaning vs per-document reference (same subset)", "ours_clean_subset", "clean_reference", None),
        (
            "rule-based chain vs datatrove's three filters (same subset)",
            "ours_rule_chain_subset",
            "datatrove_chain",
            TARGET_RULE_CHAIN,
        ),
        ("heuristic chain vs datatrove (same subset)", "ours_chain_subset", "datatrove_chain", TARGET_CHAIN),
        ("heuristic chain vs datatrove (ours on all documents)", "ours_chain", "datatrove_chain", None),
        (
            "MinHash signatures vs datasketch (same subset)",
            "ours_minhash_subset",
            "datasketch",
            TARGET_MINHASH,
        ),
        (
            "MinHash signatures vs datasketch, shared permutations (same subset)",
            "ours_minhash_subset",
            "datasketch_shared_perm",
            None,
        ),
        ("MinHash signatures vs rensa (same subset)", "ours_minhash_subset", "rensa", None),
        ("MinHash signatures vs datasketch (ours on all documents)", "ours_minhash", "datasketch", None),
        (
            "MinHash signatures vs datatrove signature step (same subset)",
            "ours_minhash_subset",
            "datatrove_minhash",
            None,
        ),
        ("fuzzy dedup end to end vs datasketch signatures alone", "ours_fuzzy", "datasketch", None),
    ]
    return [c for c in candidates if c[1] in r and c[2] in r]


def print_table(results: dict) -> None:
    r = results["runs"]
    print()
    print(
        f"{'component':<34} {'docs':>9} {'MB':>8} {'CPU s':>8} {'MB/s/core':>10} {'docs/s/core':>12} "
        f"{'peak RSS MB':>12}"
    )
    for key, x in r.items():
        print(
            f"{key:<34} {x['docs']:>9,} {x['bytes'] / 1e6:>8,.1f} {x['cpu_s']:>8,.1f} {mbps(x):>10,.2f} "
            f"{dps(x):>12,.0f} {x['peak_rss_mb']:>12,.0f}"
        )
    print()
    for label, a, b, target in ratio_rows(r):
        ratio = mbps(r[a]) / mbps(r[b])
        verdict = (
            "" if target is None else (f"target ≥{target:g}x: " + ("met" if ratio >= target else "SHORT"))
        )
        print(f"{label:<62} {ratio:>7.1f}x  {verdict}")
    if "agreement" in results:
        a = results["agreement"]
        print(
            f"\nkeep/remove agreement with datatrove on {a['docs']:,} docs: {a['agree']:.2%} "
            f"(only ours removes {a['ours_remove_only']:,}, "
            f"only datatrove removes {a['datatrove_remove_only']:,})"
        )
        for x, y, c in a["pairs"][:10]:
            print(f"    ours {x:<40} datatrove {y:<40} {c:>6,}")
    for comp, runs in results.get("scaling", {}).items():
        for share, x in sorted(runs.items(), key=lambda kv: float(kv[0])):
            print(
                f"memory {comp:<12} {float(share):>5.0%} of corpus: {x['docs']:>9,} docs, "
                f"after setup {x['rss_setup_mb']:,.0f} MB, peak {x['peak_rss_mb']:,.0f} MB"
            )
