"""Parsing and language-ID benchmark on real files this machine has (Debian documentation).

Nothing is downloaded or bundled: every corpus is built from what the machine has, and a part
whose input is missing is skipped with a line that says so.

``html``      The hand-checked pages of tests/fixtures/html_expectations.json: share of must-keep
              snippets kept and of boilerplate snippets leaked, per extractor (resiliparse, as
              the reader uses it, and trafilatura). Then throughput on every HTML page under
              /usr/share/doc (python3-doc's manual if installed): pages/s and MB/s per core,
              one thread, decode + extraction, both extractors on the same pages. Also how
              many extracted pages the Gopher '#' rule would reject with and without markdown
              heading marks.
``warc``      A WARC (plain and gzip) of those pages written with warcio, read back with
              FastWARC and warcio (records/s, MB/s), then end to end through the text reader.
``pdf``       Every PDF under /usr/share: pages/s with pypdf (plain and layout mode, as the
              reader uses it) and pdfminer.six.
``language``  A labelled corpus from translated manual pages (/usr/share/man/<lang>/, rendered
              with groff; paragraphs also present in the English page are dropped as
              untranslated): accuracy per language for paragraphs and whole pages, under
              lingua's modes (all languages / corpus languages only, high / low accuracy,
              prefix lengths), docs/s and MB/s on one core (RAYON_NUM_THREADS=1, each config in
              its own process, model load time and peak RSS reported separately), the English
              function-word share (the old gate) as the baseline, the score distribution that
              sets ``min_language_score``, and how the per-language Gopher stop-word lists
              separate their language from the others.

    .venv/bin/python -m benchmarks.bench_parsing html warc pdf language

Results: tables on stdout and ``benchmarks/out/parsing_results.json``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "benchmarks" / "out"
CACHE = ROOT / ".refinery" / "bench"
FIXTURES = ROOT / "tests" / "fixtures"
DOC_ROOT = Path("/usr/share/doc")
MAN_ROOT = Path("/usr/share/man")
# man page folder -> ISO 639-1 (lingua's codes)
MAN_LANGUAGES = {
    "cs": "cs",
    "da": "da",
    "de": "de",
    "es": "es",
    "fi": "fi",
    "fr": "fr",
    "hr": "hr",
    "hu": "hu",
    "id": "id",
    "it": "it",
    "ja": "ja",
    "ko": "ko",
    "nl": "nl",
    "pl": "pl",
    "pt": "pt",
    "pt_BR": "pt",
    "ro": "ro",
    "ru": "ru",
    "sl": "sl",
    "sr": "sr",
    "sv": "sv",
    "tr": "tr",
    "uk": "uk",
    "zh_CN": "zh",
    "zh_TW": "zh",
}
NO_SPACE = {"zh", "ja", "th"}


def norm(text: str) -> str:
    return " ".join(re.sub(r"[`*\\¶]", "", text).split())


def cpu_rate(fn, items, sizes) -> dict:
    """Run fn over items on this thread; rate per CPU second (= per core)."""
    start_cpu, start = time.process_time(), time.perf_counter()
    for item in items:
        fn(item)
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
    mb = sum(sizes) / 1e6
    return {
        "items": len(items),
        "mb": round(mb, 2),
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "items_per_s": round(len(items) / cpu, 1),
        "mb_per_s": round(mb / cpu, 2),
    }


# -- HTML ----------------------------------------------------------------------------------------
def html_pages(limit: int | None) -> list[Path]:
    pages = sorted(
        {p.resolve() for p in DOC_ROOT.rglob("*.htm*") if p.is_file() and p.suffix in (".html", ".htm")}
    )
    if limit and len(pages) > limit:
        pages = random.Random(0).sample(pages, limit)
    return pages


def bench_html(args) -> dict:
    from refinery.filters.params import HeuristicParams
    from refinery.ingest.html import decode_html, extract_html
    from refinery.text.words import tokens

    expectations = json.loads((FIXTURES / "html_expectations.json").read_text())["pages"]
    quality = {}
    for extractor in ("resiliparse", "trafilatura"):
        kept = leaked = n_keep = n_leak = 0
        per_page = []
        for page in expectations:
            html = decode_html((FIXTURES / "html" / page["file"]).read_bytes()).text
            text = norm(extract_html(html, extractor).text)
            k = sum(norm(s) in text for s in page["must_contain"])
            leak = [s for s in page["must_not_contain"] if norm(s) in text]
            kept, leaked = kept + k, leaked + len(leak)
            n_keep, n_leak = n_keep + len(page["must_contain"]), n_leak + len(page["must_not_contain"])
            per_page.append(
                {"file": page["file"], "kept": f"{k}/{len(page['must_contain'])}", "leaked": leak}
            )
        quality[extractor] = {
            "kept": kept,
            "must_contain": n_keep,
            "leaked": leaked,
            "must_not_contain": n_leak,
            "kept_share": round(kept / n_keep, 3),
            "leaked_share": round(leaked / n_leak, 3),
            "pages": per_page,
        }
        print(
            f"{extractor:12s} main text kept {kept}/{n_keep} ({kept / n_keep:.0%}), "
            f"boilerplate leaked {leaked}/{n_leak} ({leaked / n_leak:.0%})"
        )

    pages = html_pages(args.html_pages)
    if not pages:
        print("html throughput: skipped, no HTML under /usr/share/doc")
        return {"quality": quality}
    data = [p.read_bytes() for p in pages]
    decoded = [decode_html(d).text for d in data]
    sizes = [len(d) for d in data]
    speed = {}
    for extractor in ("resiliparse", "trafilatura"):
        extract_html(decoded[0], extractor)  # imports and warm-up outside the timing
        speed[extractor] = cpu_rate(
            lambda i, ex=extractor: extract_html(decode_html(data[i]).text, ex), range(len(data)), sizes
        )
        print(
            f"{extractor:12s} {speed[extractor]['items_per_s']:8.1f} pages/s  "
            f"{speed[extractor]['mb_per_s']:6.2f} MB/s per core "
            f"({len(data)} pages, {sum(sizes) / 1e6:.1f} MB)"
        )
    ratio = speed["resiliparse"]["items_per_s"] / speed["trafilatura"]["items_per_s"]
    print(f"resiliparse / trafilatura speed: {ratio:.1f}x")

    p = HeuristicParams()
    over = {"with_marks": 0, "without_marks": 0}
    extracted = 0
    for html in decoded:
        text = extract_html(html, "resiliparse").text
        if not text:
            continue
        extracted += 1
        plain = re.sub(r"(?m)^#{1,6} ", "", text)
        for key, t in (("with_marks", text), ("without_marks", plain)):
            n = len(tokens(t)) or 1
            over[key] += t.count("#") / n > p.max_hash_word_ratio
    print(
        f"Gopher '#' rule would reject {over['with_marks']}/{extracted} pages with markdown heading marks, "
        f"{over['without_marks']} without"
    )
    return {
        "quality": quality,
        "speed": speed,
        "speed_ratio": round(ratio, 2),
        "hash_rule": over,
        "pages": len(data),
        "mb": round(sum(sizes) / 1e6, 2),
    }


# -- WARC ----------------------------------------------------------------------------------------
def write_warc(path: Path, pages: list[Path], gzip_records: bool) -> int:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with path.open("wb") as out:
        writer = WARCWriter(out, gzip=gzip_records)
        for page in pages:
            uri = "https://docs.example" + str(page)
            writer.write_record(
                writer.create_warc_record(uri, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n"))
            )
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
            writer.write_record(
                writer.create_warc_record(
                    uri, "response", payload=io.BytesIO(page.read_bytes()), http_headers=http
                )
            )
    return path.stat().st_size


def bench_warc(args) -> dict:
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from warcio.archiveiterator import ArchiveIterator as WarcioIterator

    from refinery.ingest.text_reader import IngestParams, SourceReader

    pages = html_pages(args.html_pages)
    if not pages:
        print("warc: skipped, no HTML under /usr/share/doc")
        return {}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for gz in (False, True):
            path = Path(tmp) / "src" / ("crawl.warc.gz" if gz else "crawl.warc")
            path.parent.mkdir(exist_ok=True)
            size = write_warc(path, pages, gz)

            def fast(_, path=path):
                with path.open("rb") as f:
                    for rec in ArchiveIterator(f, parse_http=True, auto_decode="none"):
                        if rec.record_type == WarcRecordType.response:
                            rec.reader.read()

            def slow(_, path=path):
                with path.open("rb") as f:
                    for rec in WarcioIterator(f):
                        if rec.rec_type == "response":
                            rec.content_stream().read()

            reps = range(5)
            f_rate, w_rate = cpu_rate(fast, reps, [size] * 5), cpu_rate(slow, reps, [size] * 5)
            start = time.process_time()
            reader = SourceReader(path.parent, "s", IngestParams())
            docs = sum(len(b.documents) for b in reader.batches())
            cpu = time.process_time() - start
            key = "warc.gz" if gz else "warc"
            results[key] = {
                "file_mb": round(size / 1e6, 2),
                "records": 2 * len(pages),
                "fastwarc_mb_per_s": f_rate["mb_per_s"],
                "warcio_mb_per_s": w_rate["mb_per_s"],
                "fastwarc_over_warcio": round(f_rate["mb_per_s"] / w_rate["mb_per_s"], 2),
                "reader_docs": docs,
                "reader_docs_per_s": round(docs / cpu, 1),
            }
            print(
                f"{key:8s} {size / 1e6:6.1f} MB: FastWARC {f_rate['mb_per_s']:7.1f} MB/s, warcio "
                f"{w_rate['mb_per_s']:6.1f} MB/s ({results[key]['fastwarc_over_warcio']}x); "
                "reader end to end "
                f"{results[key]['reader_docs_per_s']} docs/s ({docs} docs)"
            )
            path.unlink()
    return results


# -- PDF -----------------------------------------------------------------------------------------
def bench_pdf(args) -> dict:
    from pdfminer.high_level import extract_text as pdfminer_text
    from pypdf import PdfReader

    from refinery.ingest.pdf import extract_pdf

    pdfs = sorted(p for p in Path("/usr/share").rglob("*.pdf") if p.is_file())
    if not pdfs:
        print("pdf: skipped, no PDF under /usr/share (install a -doc package that ships one)")
        return {}
    results = {}
    pages = 0
    for p in pdfs:
        pages += len(PdfReader(p).pages)
    sizes = [p.stat().st_size for p in pdfs]
    runs = {
        "pypdf_plain": lambda p: [pg.extract_text() for pg in PdfReader(p).pages],
        "pypdf_layout_reader": lambda p: extract_pdf(p.read_bytes(), 5000, 64 << 20),
        "pdfminer_six": lambda p: pdfminer_text(p),
    }
    for name, fn in runs.items():
        rate = cpu_rate(fn, pdfs, sizes)
        results[name] = {**rate, "pages_per_s": round(pages / rate["cpu_s"], 1)}
        print(
            f"{name:20s} {results[name]['pages_per_s']:7.1f} pages/s per core "
            f"({len(pdfs)} PDFs, {pages} pages)"
        )
    results["files"] = [str(p) for p in pdfs]
    return results


# -- language ------------------------------------------------------------------------------------
def render_man(path: Path) -> list[str]:
    """A man page as one line per paragraph (groff with a very long line length)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    out = subprocess.run(
        ["groff", "-k", "-man", "-Tutf8", "-P-cbou", "-rLL=4000n"],
        input=raw,
        capture_output=True,
        timeout=60,
        check=False,
    ).stdout.decode("utf-8", "replace")
    return [" ".join(line.split()) for line in out.splitlines() if line.strip()]


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_WORD = re.compile(r"^[^\W\d_]+[.,;:!?»«\"')]*$")


def _keep_paragraph(line: str, lang: str) -> bool:
    """Prose, not option lists or "SEE ALSO" rows: enough words, most of them plain words."""
    if lang in NO_SPACE or lang == "ko":
        return len(line) >= 30 and len(_CJK.findall(line)) >= 0.3 * len(line.replace(" ", ""))
    tokens = line.split()
    return (
        len(tokens) >= 8
        and len(line) >= 50
        and sum(bool(_WORD.match(t)) for t in tokens) >= 0.6 * len(tokens)
    )


def build_language_corpus(pages_per_language: int, english_pages: int) -> list[dict]:
    """Labelled paragraphs and pages from the translated man pages on this machine (cached)."""
    files: dict[str, list[Path]] = defaultdict(list)
    for folder, lang in MAN_LANGUAGES.items():
        files[lang] += sorted((MAN_ROOT / folder).glob("man*/*"))
    english = sorted(p for p in MAN_ROOT.glob("man[1-8]/*") if p.is_file())
    files["en"] = random.Random(1).sample(english, min(english_pages, len(english)))
    listing = "\n".join(f"{lang}:{p}" for lang, paths in sorted(files.items()) for p in paths)
    key = f"{pages_per_language}-{english_pages}-{hashlib.sha1(listing.encode()).hexdigest()[:12]}"
    cache = CACHE / f"language_corpus_v2_{key}.jsonl"
    if cache.exists():
        return [json.loads(line) for line in cache.open()]
    rows = []
    for lang, paths in sorted(files.items()):
        paths = [p for p in paths if p.is_file()]
        if lang != "en" and len(paths) > pages_per_language:
            paths = random.Random(0).sample(paths, pages_per_language)
        for path in paths:
            lines = render_man(path)
            if lang != "en":
                original = MAN_ROOT / path.parent.name / path.name
                untranslated = set(render_man(original)) if original.exists() else set()
                lines = [line for line in lines if line not in untranslated]
            paragraphs = [line for line in lines if _keep_paragraph(line, lang)]
            if not paragraphs:
                continue
            rel = str(path.relative_to(MAN_ROOT))
            rows += [{"lang": lang, "kind": "paragraph", "file": rel, "text": t} for t in paragraphs]
            rows.append({"lang": lang, "kind": "page", "file": rel, "text": "\n\n".join(paragraphs)})
    CACHE.mkdir(parents=True, exist_ok=True)
    with cache.open("w") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows


def _label_worker(spec: str) -> None:
    """In a fresh process (RAYON_NUM_THREADS=1): load, label, time; JSON on stdout."""
    import resource

    from refinery.text.language_id import LanguageIdParams, label_texts

    config = json.loads(spec)
    with Path(config["corpus"]).open() as lines:
        texts = [json.loads(line)["text"] for line in lines]
    params = LanguageIdParams(**config["params"])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.process_time()
    label_texts(texts, params)  # first pass: loads every model these texts need (lingua loads lazily)
    first = time.process_time() - start
    start_cpu, start = time.process_time(), time.perf_counter()
    labels, scores = label_texts(texts, params)  # second pass: models in memory
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
    load = max(first - cpu, 0.0)
    print(
        json.dumps(
            {
                "labels": labels,
                "scores": scores,
                "cpu_s": cpu,
                "wall_s": wall,
                "load_cpu_s": load,
                "rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024,
            }
        )
    )


def run_labeller(corpus_path: Path, params: dict) -> dict:
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    spec = json.dumps({"corpus": str(corpus_path), "params": params})
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_parsing", "--label-worker", spec],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def accuracy(rows: list[dict], labels: list[str]) -> dict:
    per_lang: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row, label in zip(rows, labels, strict=True):
        per_lang[row["lang"]][0] += label == row["lang"]
        per_lang[row["lang"]][1] += 1
    total = sum(c for c, _ in per_lang.values()), sum(n for _, n in per_lang.values())
    macro = sum(c / n for c, n in per_lang.values()) / len(per_lang)
    return {
        "micro": round(total[0] / total[1], 4),
        "macro": round(macro, 4),
        "per_language": {k: round(c / n, 3) for k, (c, n) in sorted(per_lang.items())},
    }


def bench_language(args) -> dict:
    from refinery.filters.language import english_word_fraction
    from refinery.text.stopwords import GOPHER_STOP_WORDS_BY_LANGUAGE
    from refinery.text.words import words

    rows = build_language_corpus(args.man_pages, args.english_pages)
    found = sorted({r["lang"] for r in rows})
    missing = sorted(set(MAN_LANGUAGES.values()) - set(found))
    print(f"corpus: {len(rows)} texts in {len(found)} languages from {MAN_ROOT}: {', '.join(found)}")
    if missing:
        print(f"  skipped (no translated man pages on this machine): {', '.join(missing)}")
    if not rows:
        return {}
    counts = Counter((r["lang"], r["kind"]) for r in rows)
    # balance: at most N paragraphs per language, every page
    rng = random.Random(2)
    by_lang = defaultdict(list)
    for r in rows:
        if r["kind"] == "paragraph":
            by_lang[r["lang"]].append(r)
    paragraphs = [
        r
        for lang in sorted(by_lang)
        for r in rng.sample(by_lang[lang], min(args.paragraphs, len(by_lang[lang])))
    ]
    pages = [r for r in rows if r["kind"] == "page"]
    results: dict = {
        "languages": found,
        "missing": missing,
        "paragraphs": len(paragraphs),
        "pages": len(pages),
        "counts": {f"{k[0]}/{k[1]}": v for k, v in sorted(counts.items())},
    }
    configs = {
        "all_high_2000": {"languages": None, "low_accuracy": False, "max_chars": 2000},
        "all_low_2000": {"languages": None, "low_accuracy": True, "max_chars": 2000},
        "corpus_high_2000": {"languages": found, "low_accuracy": False, "max_chars": 2000},
        "corpus_low_2000": {"languages": found, "low_accuracy": True, "max_chars": 2000},
        "all_low_1000": {"languages": None, "low_accuracy": True, "max_chars": 1000},
        "all_low_500": {"languages": None, "low_accuracy": True, "max_chars": 500},
        "all_low_200": {"languages": None, "low_accuracy": True, "max_chars": 200},
        "all_high_500": {"languages": None, "low_accuracy": False, "max_chars": 500},
        "all_high_full": {"languages": None, "low_accuracy": False, "max_chars": None},
    }
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"paragraph": paragraphs, "page": pages}
        paths = {}
        for name, subset in sets.items():
            paths[name] = Path(tmp) / f"{name}.jsonl"
            with paths[name].open("w") as out:
                for r in subset:
                    out.write(json.dumps({"text": r["text"]}) + "\n")
        table = {}
        for cname, params in configs.items():
            table[cname] = {}
            for sname, subset in sets.items():
                if cname.endswith(("_1000", "_500", "_full")) and sname == "paragraph":
                    continue  # paragraphs are shorter than these prefixes: same as the 2000 run
                res = run_labeller(paths[sname], params)
                mb = sum(len(r["text"].encode()) for r in subset) / 1e6
                acc = accuracy(subset, res["labels"])
                table[cname][sname] = {
                    **acc,
                    "docs_per_s": round(len(subset) / res["cpu_s"], 1),
                    "mb_per_s": round(mb / res["cpu_s"], 3),
                    "load_cpu_s": round(res["load_cpu_s"], 1),
                    "rss_mb": round(res["rss_mb"]),
                }
                if cname in ("all_high_2000", "all_low_2000"):
                    table[cname][sname]["_scores"] = res["scores"]
                    table[cname][sname]["_labels"] = res["labels"]
                r = table[cname][sname]
                print(
                    f"{cname:17s} {sname:9s} micro {r['micro']:.3f} macro {r['macro']:.3f}  "
                    f"{r['docs_per_s']:8.1f} docs/s {r['mb_per_s']:6.3f} MB/s per core  "
                    f"load {r['load_cpu_s']:5.1f} s  +{r['rss_mb']} MB"
                )

    # baseline: the old gate (English function-word share ≥ 10%) as an English / not-English decision
    base = {}
    for sname, subset in (("paragraph", paragraphs), ("page", pages)):
        start = time.process_time()
        fractions = [english_word_fraction(words(r["text"])) for r in subset]
        cpu = time.process_time() - start
        correct = sum((f >= 0.10) == (r["lang"] == "en") for f, r in zip(fractions, subset, strict=True))
        lab = table["all_high_2000"][sname]["_labels"]
        lingua_bin = sum((label == "en") == (r["lang"] == "en") for label, r in zip(lab, subset, strict=True))
        base[sname] = {
            "function_word_gate_binary_acc": round(correct / len(subset), 4),
            "lingua_binary_acc": round(lingua_bin / len(subset), 4),
            "function_word_docs_per_s": round(len(subset) / cpu, 1),
        }
        print(
            f"en/not-en on {sname}s: function-word gate {base[sname]['function_word_gate_binary_acc']:.3f} "
            f"({base[sname]['function_word_docs_per_s']:.0f} docs/s), "
            f"lingua {base[sname]['lingua_binary_acc']:.3f}"
        )
    results["baseline"] = base

    # score distribution: correct labels vs wrong ones, to set min_language_score
    dist = {}
    for cname in ("all_high_2000", "all_low_2000"):
        for sname in ("paragraph", "page"):
            subset = sets[sname]
            r = table[cname][sname]
            pairs = list(zip(r["_scores"], r["_labels"], subset, strict=True))
            right = sorted(s for s, label, row in pairs if label == row["lang"])
            wrong = sorted(s for s, label, row in pairs if label != row["lang"])
            q = lambda v, f: round(v[int(f * (len(v) - 1))], 3) if v else None  # noqa: E731
            d = {
                "correct_p01": q(right, 0.01),
                "correct_p05": q(right, 0.05),
                "correct_p50": q(right, 0.5),
                "wrong_p50": q(wrong, 0.5),
                "wrong_p95": q(wrong, 0.95),
                "wrong": len(wrong),
            }
            for threshold in (0.3, 0.5, 0.65, 0.8, 0.9):
                kept_right = sum(s >= threshold for s in right) / max(len(right), 1)
                kept_wrong = sum(s >= threshold for s in wrong) / max(len(wrong), 1)
                d[f"at_{threshold}"] = {
                    "correct_kept": round(kept_right, 3),
                    "wrong_kept": round(kept_wrong, 3),
                }
            dist[f"{cname}/{sname}"] = d
            print(f"scores {cname} {sname}: {d}")
    for cfg in table.values():
        for entry in cfg.values():
            entry.pop("_scores", None), entry.pop("_labels", None)
    results["scores"] = dist
    results["configs"] = table

    # stop-word lists: ≥ 2 distinct list words in the language's own pages vs in other languages'
    sw = {}
    for lang, stop in sorted(GOPHER_STOP_WORDS_BY_LANGUAGE.items()):
        own = [r for r in paragraphs if r["lang"] == lang]
        other = [r for r in paragraphs if r["lang"] != lang]
        if not own:
            continue
        passes = lambda r, stop=frozenset(stop): len({w.lower() for w in words(r["text"])} & stop) >= 2  # noqa: E731
        sw[lang] = {
            "own_paragraphs_pass": round(sum(map(passes, own)) / len(own), 3),
            "other_paragraphs_pass": round(sum(map(passes, other)) / len(other), 3),
        }
    print("stop-word rule (>= 2 distinct) pass rate, own language vs others:", sw)
    results["stop_words"] = sw
    return results


def write_fixture(
    path: Path, per_language: int = 3, page_languages=("en", "de", "fr", "es", "ru", "zh")
) -> None:
    """The small real multilingual fixture of tests/unit/test_language_rules.py, from the corpus:
    ``per_language`` random paragraphs of 80–400 characters per language, plus the first ~1,500
    characters of one page for ``page_languages``, each with the Debian package that ships it."""
    rows = build_language_corpus(40, 80)
    rng = random.Random(7)
    chosen = []
    for lang in sorted({r["lang"] for r in rows}):
        paragraphs = [
            r for r in rows if r["lang"] == lang and r["kind"] == "paragraph" and 80 <= len(r["text"]) <= 400
        ]
        chosen += rng.sample(paragraphs, min(per_language, len(paragraphs)))
        if lang in page_languages:
            pages = [r for r in rows if r["lang"] == lang and r["kind"] == "page" and len(r["text"]) >= 1500]
            page = dict(rng.choice(pages))
            cut = page["text"][:1500]
            page["text"] = cut[: cut.rfind("\n\n")] if "\n\n" in cut else cut
            chosen.append(page)
    with path.open("w") as out:
        for row in chosen:
            owner = subprocess.run(
                ["dpkg", "-S", str(MAN_ROOT / row["file"])], capture_output=True, text=True
            )
            package = owner.stdout.split(":")[0].strip() or "unknown"
            out.write(json.dumps({**row, "package": package}, ensure_ascii=False) + "\n")
    print(f"wrote {len(chosen)} texts to {path}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--write-fixture":
        write_fixture(FIXTURES / "multilingual.jsonl")
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--label-worker":
        _label_worker(sys.argv[2])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("parts", nargs="*", default=["html", "warc", "pdf", "language"])
    parser.add_argument("--html-pages", type=int, default=None, help="sample this many HTML pages")
    parser.add_argument("--man-pages", type=int, default=40, help="translated man pages per language")
    parser.add_argument("--english-pages", type=int, default=80)
    parser.add_argument("--paragraphs", type=int, default=150, help="paragraphs per language")
    args = parser.parse_args()
    results = {}
    for part in args.parts:
        print(f"== {part}")
        results[part] = {
            "html": bench_html,
            "warc": bench_warc,
            "pdf": bench_pdf,
            "language": bench_language,
        }[part](args)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "parsing_results.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**previous, **results}, indent=1, ensure_ascii=False))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
