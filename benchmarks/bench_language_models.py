"""Language ID models side by side: lingua, fastText lid.176 (ftz) and CLD3, on real Debian text.

Two labelled sets, both built from what the machine has (nothing downloaded):

- ``man``: the translated manual pages (``benchmarks/bench_parsing.py``'s set: /usr/share/man/<lang>/,
  paragraphs that also occur in the English page dropped as untranslated; pages and paragraphs).
  ``scripts/language_corpus.sh`` installs the Debian manpages-* packages it needs.
- ``mo``: the translations of installed programs, /usr/share/locale/<lang>/LC_MESSAGES/*.mo:
  every msgstr that differs from its msgid and reads as prose (≥ 50 characters, mostly words) is a
  paragraph; one .mo file's kept messages joined (cut near 3,000 characters) is a page. Gold is the
  folder's language (``pt_BR`` → pt, ``sr@latin`` → sr). Languages with at least ``--mo-min-files``
  files.

Accuracy is micro (all texts) and macro (mean of per-language accuracy), over the languages all
three models know (a language a model cannot answer would count only against it; coverage is
reported apart). Speed is MB/s per CPU second in a fresh process (``RAYON_NUM_THREADS=1``), the
model loaded. The labels' cost against cleaning: ``clean_texts`` and each model on the same real
documents (``benchmarks/real_corpus.py``), CPU seconds, so the share is labels / cleaning.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_language_models.py
"""

from __future__ import annotations

import argparse
import gettext
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_parsing import _keep_paragraph, accuracy, build_language_corpus  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
LOCALE = Path("/usr/share/locale")
MODELS = {
    "lingua_1000": {"model": "lingua", "low_accuracy": True, "max_chars": 1000},  # the old default
    "lingua": {"model": "lingua", "low_accuracy": True, "max_chars": 400},
    "fasttext": {"model": "fasttext", "max_chars": 400},
    "fasttext_1000": {"model": "fasttext", "max_chars": 1000},
    "cld3": {"model": "cld3", "max_chars": 400},
}


def _gold(folder: str) -> str | None:
    from refinery.text.language_models import to_iso

    code = folder.split("@", 1)[0].split("_", 1)[0]
    if code == "en" or len(code) != 2:
        return None
    return to_iso(code)


def build_mo_corpus(min_files: int, pages_per_language: int, page_chars: int = 3000) -> list[dict]:
    rows = []
    rng = random.Random(3)
    by_lang: dict[str, list[Path]] = defaultdict(list)
    for folder in sorted(LOCALE.iterdir()):
        lang = _gold(folder.name)
        if lang:
            by_lang[lang] += sorted((folder / "LC_MESSAGES").glob("*.mo"))
    for lang, files in sorted(by_lang.items()):
        if len(files) < min_files:
            continue
        for path in rng.sample(files, min(pages_per_language, len(files))):
            try:
                with path.open("rb") as handle:
                    catalog = gettext.GNUTranslations(handle)._catalog
            except Exception:  # a malformed .mo is skipped: it is not what is measured
                continue
            kept = []
            for key, value in catalog.items():
                msgid = key[0] if isinstance(key, tuple) else key
                if not isinstance(value, str) or not msgid or value == msgid:
                    continue
                text = " ".join(value.split())
                if _keep_paragraph(text, lang):
                    kept.append(text)
            if not kept:
                continue
            kept.sort()
            rel = str(path.relative_to(LOCALE))
            rows += [{"lang": lang, "kind": "paragraph", "file": rel, "text": t} for t in kept]
            page, size = [], 0
            for t in kept:
                if size + len(t) > page_chars and page:
                    break
                page.append(t)
                size += len(t) + 2
            rows.append({"lang": lang, "kind": "page", "file": rel, "text": "\n\n".join(page)})
    return rows


def balance(rows: list[dict], per_language: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(2)
    by_lang = defaultdict(list)
    for r in rows:
        if r["kind"] == "paragraph":
            by_lang[r["lang"]].append(r)
    paragraphs = [
        r
        for lang in sorted(by_lang)
        for r in rng.sample(by_lang[lang], min(per_language, len(by_lang[lang])))
    ]
    return paragraphs, [r for r in rows if r["kind"] == "page"]


def _worker(spec: str) -> None:
    """In a fresh process: label the file twice (load, then timed); or clean then label (share)."""
    from refinery.text.language_id import LanguageIdParams, label_texts

    config = json.loads(spec)
    with Path(config["corpus"]).open() as lines:
        texts = [json.loads(line)["text"] for line in lines]
    params = LanguageIdParams(**config["params"])
    out: dict = {}
    if config.get("clean"):
        from refinery.clean.cleaning import CleanParams, clean_texts

        start = time.process_time()
        texts, _ = clean_texts(texts, CleanParams())
        out["clean_cpu_s"] = time.process_time() - start
    label_texts(texts[:200], params)  # load the model
    start = time.process_time()
    labels, scores = label_texts(texts, params)
    out.update(labels=labels, scores=scores, cpu_s=time.process_time() - start)
    print(json.dumps(out))


def run_worker(path: Path, params: dict, clean: bool = False) -> dict:
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    spec = json.dumps({"corpus": str(path), "params": params, "clean": clean})
    out = subprocess.run(
        [sys.executable, __file__, "--worker", spec], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with path.open("w") as out:
        for r in rows:
            out.write(json.dumps({"text": r["text"]}, ensure_ascii=False) + "\n")
    return path


def known_by_all() -> dict[str, frozenset[str]]:
    from refinery.text.language_models import labeller

    return {name: labeller(p["model"], None, True, 1000).known() for name, p in MODELS.items()}


def _share_at(res: dict, rows: list[dict], right: bool, threshold: float = 0.65) -> float | None:
    scores = [
        s
        for s, label, r in zip(res["scores"], res["labels"], rows, strict=True)
        if (label == r["lang"]) == right
    ]
    return round(sum(s >= threshold for s in scores) / len(scores), 4) if scores else None


def compare(name: str, rows_by_kind: dict[str, list[dict]], tmp: Path, common: frozenset[str]) -> dict:
    table: dict = {}
    for kind, rows in rows_by_kind.items():
        path = write_jsonl(tmp / f"{name}-{kind}.jsonl", rows)
        mb = sum(len(r["text"].encode()) for r in rows) / 1e6
        for model, params in MODELS.items():
            res = run_worker(path, params)
            shared = [(r, label) for r, label in zip(rows, res["labels"], strict=True) if r["lang"] in common]
            acc = accuracy([r for r, _ in shared], [label for _, label in shared])
            every = accuracy(rows, res["labels"])
            entry = {
                "micro": acc["micro"],
                "macro": acc["macro"],
                "micro_all_languages": every["micro"],
                "macro_all_languages": every["macro"],
                "texts": len(rows),
                "mb_per_s": round(mb / res["cpu_s"], 2),
                "docs_per_s": round(len(rows) / res["cpu_s"], 1),
                "per_language": every["per_language"],
                # min_language_score (0.65): share of right / wrong labels at or above it
                "right_at_0.65": _share_at(res, rows, True),
                "wrong_at_0.65": _share_at(res, rows, False),
                "wrong": [
                    {"gold": r["lang"], "label": label, "file": r["file"]}
                    for r, label in zip(rows, res["labels"], strict=True)
                    if label != r["lang"]
                ][:400],
            }
            table.setdefault(kind, {})[model] = entry
            print(
                f"{name:4s} {kind:9s} {model:9s} micro {entry['micro']:.4f} macro {entry['macro']:.4f} "
                f"(all languages {entry['micro_all_languages']:.4f} / {entry['macro_all_languages']:.4f})  "
                f"{entry['mb_per_s']:7.2f} MB/s per core  {entry['docs_per_s']:9.1f} docs/s  "
                f"[{len(rows)} texts]",
                flush=True,
            )
    return table


def cost_against_cleaning(tmp: Path, max_mb: float, docs: int) -> dict:
    from benchmarks.real_corpus import ensure_real_corpus

    corpus = ensure_real_corpus(max_mb)
    rows = [{"text": t} for b in corpus.iter_batches(limit=docs) for t in b.column("text").to_pylist()]
    path = write_jsonl(tmp / "real.jsonl", rows)
    mb = sum(len(r["text"].encode()) for r in rows) / 1e6
    out = {}
    for model, params in MODELS.items():
        res = run_worker(path, params, clean=True)
        out[model] = {
            "clean_mb_per_s": round(mb / res["clean_cpu_s"], 2),
            "label_mb_per_s": round(mb / res["cpu_s"], 2),
            "label_share_of_cleaning": round(res["cpu_s"] / res["clean_cpu_s"], 3),
            "documents": len(rows),
            "mb": round(mb, 2),
        }
        print(
            f"real {model:9s} cleaning {out[model]['clean_mb_per_s']:6.2f} MB/s, labels "
            f"{out[model]['label_mb_per_s']:7.2f} MB/s: labels cost "
            f"{100 * out[model]['label_share_of_cleaning']:.1f} % "
            f"of cleaning's CPU ({len(rows)} docs, {mb:.1f} MB)",
            flush=True,
        )
    return out


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        _worker(sys.argv[2])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--man-pages", type=int, default=40)
    parser.add_argument("--english-pages", type=int, default=80)
    parser.add_argument("--paragraphs", type=int, default=150)
    parser.add_argument("--mo-min-files", type=int, default=20)
    parser.add_argument("--mo-pages", type=int, default=30)
    parser.add_argument("--real-mb", type=float, default=32)
    parser.add_argument("--real-docs", type=int, default=3000)
    args = parser.parse_args()
    known = known_by_all()
    common = frozenset.intersection(*known.values())
    results: dict = {"known": {k: sorted(v) for k, v in known.items()}}
    sets = {
        "man": build_language_corpus(args.man_pages, args.english_pages),
        "mo": build_mo_corpus(args.mo_min_files, args.mo_pages),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, rows in sets.items():
            paragraphs, pages = balance(rows, args.paragraphs)
            langs = sorted({r["lang"] for r in rows})
            results[name] = {
                "languages": langs,
                "not_known_by_all": sorted(set(langs) - common),
                "models": compare(name, {"page": pages, "paragraph": paragraphs}, Path(tmp), common),
            }
            print(
                f"{name}: {len(langs)} languages ({', '.join(langs)}); not known by all three: "
                f"{results[name]['not_known_by_all']}",
                flush=True,
            )
        results["cost"] = cost_against_cleaning(Path(tmp), args.real_mb, args.real_docs)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "language_models.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"wrote {OUT / 'language_models.json'}")


if __name__ == "__main__":
    main()
