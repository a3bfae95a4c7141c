"""Do list items on API reference pages survive HTML extraction, and does navigation stay out?

Over N library-reference pages of the Python HTML docs that Debian ships (python3-doc,
/usr/share/doc/python3/html/library: every page with a Sphinx field list — "Parameters:",
"Returns:", "Return type:" — plus a seeded sample of the others), for each extractor variant:

- **items kept**: the main-body ``<li>``/``<dt>``/``<dd>`` items (inside ``div[role=main]``, not in
  a toctree or contents block) whose own text (nested lists, definition lists, code blocks and
  tables taken out: they are items or blocks of their own) occurs in the extracted text. Matching
  ignores whitespace and markdown markup, so "a ( int )" and "a (int)" are the same. Items are
  counted by kind: ``field`` (parameter lists, Returns/Return type/Raises lines of a field
  list), ``code/link`` (other items with inline code or a link), ``plain``.
  Items of an in-body table of contents (``.toctree-wrapper``, ``.contents``) are counted apart
  (``toc in body``), not in the total.
- **field pairs kept**: "Returns: str"-style pairs (``dt`` + ``dd`` of a field list) read as one
  string, so a bare "str" found elsewhere does not count.
- **nav leaked**: the text units of the sidebar, the "related" bars and the footer (list items,
  headings, paragraphs, at least 10 characters, not also in the main body) found in the output.

Variants: the reader's default (``extract_html``), resiliparse with other
``extract_plain_text`` options, trafilatura, and the fix (``main_container``: the page's
``<main>``/``[role=main]`` element extracted without the main-content heuristics).

    PYTHONPATH=$PWD python -m benchmarks.bench_html_lists [--pages N] [--show-losses K] [--doc-tree]
    PYTHONPATH=$PWD python -m benchmarks.bench_html_lists --write-fixtures   # the test pages

Also the hand-checked set (tests/fixtures/html_expectations.json) before and after, and with
``--doc-tree`` every HTML page under /usr/share/doc: pages with a main container, characters
extracted, and the pages where the fix drops a line the reader extracted before.

Results: a table on stdout and ``benchmarks/out/html_lists.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from refinery.ingest.html import (  # noqa: E402
    decode_html,
    drop_navigation_lines,
    extract_html,
    minimal_html_to_markdown,
)

LIBRARY = Path("/usr/share/doc/python3/html/library")
OUT = ROOT / "benchmarks" / "out"
MAIN = "div[role=main], main, [role=main]"
NOT_BODY = "nav, .sphinxsidebar, .related, .footer, footer"
IN_BODY_TOC = ".toctree-wrapper, .contents"
OWN_TEXT_SKIP = ["ul", "ol", "dl", "pre", "table", "div.highlight", ".headerlink"]
NAV = "div.sphinxsidebar, div.related, div.footer"
_WORD = re.compile(r"\w+")
_MARKUP = re.compile(r"[`*\\¶#\s]")


def squash(text: str) -> str:
    """Whitespace- and markup-free form: inline elements shift spaces differently per extractor."""
    return _MARKUP.sub("", text).replace("’", "'").replace("“", '"').replace("”", '"')


def _text(html: str, skip: list[str] | None = None) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    return extract_plain_text(
        HTMLTree.parse(html), main_content=False, list_bullets=False, skip_elements=skip or []
    )


def pieces(html: str, skip: list[str]) -> list[str]:
    """The squashed block-level pieces (paragraphs, lines) of an element's own text."""
    return [s for line in _text(html, skip).split("\n") if len(s := squash(line)) >= 2]


def _inside(node, selector_nodes) -> bool:
    parent = node.parent
    while parent is not None:
        if id(parent) in selector_nodes:
            return True
        parent = parent.parent
    return False


def page_units(html: str) -> dict:
    """Items of the main body (with kind) and navigation units of one page."""
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(html)
    main = tree.document.query_selector(MAIN)
    if main is None:
        return {"items": [], "pairs": [], "nav": []}
    excluded = set()
    for node in main.query_selector_all(NOT_BODY):
        excluded.add(node.html)
    tocs = [n.html for n in main.query_selector_all(IN_BODY_TOC)]
    items = []
    field_nodes = main.query_selector_all("dl.field-list")
    field_html = [n.html for n in field_nodes]
    for node in main.query_selector_all("li, dt, dd"):
        frag = node.html
        if any(frag in ex for ex in excluded):
            continue
        own = pieces(frag, OWN_TEXT_SKIP)
        if not own:
            continue
        if any(frag in t for t in tocs):
            kind = "toc in body"
        elif any(frag in f for f in field_html):
            kind = "field"
        elif node.query_selector("code, a, tt") is not None:
            kind = "code/link"
        else:
            kind = "plain"
        items.append({"kind": kind, "text": own, "show": " ".join(_text(frag, OWN_TEXT_SKIP).split())[:120]})
    pairs = []
    for dl in field_nodes:
        for dt in dl.query_selector_all("dt"):
            dd = dt.next_element
            if dd is not None and dd.tag == "dd" and dd.query_selector("li, dl") is None:
                pairs.append(squash(_text(dt.html) + _text(dd.html)))
    body = squash(_text(main.html))
    nav = []
    for block in tree.document.query_selector_all(NAV):
        for node in block.query_selector_all("li, h3, h4, p"):
            if node.query_selector("li, p") is not None:
                continue
            unit = squash(_text(node.html))
            if len(unit) >= 10 and unit not in body:
                nav.append(unit)
    return {"items": items, "pairs": pairs, "nav": nav}


# -- variants ------------------------------------------------------------------------------------
def _resiliparse(**options):
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    base = dict(
        main_content=True,
        preserve_formatting="minimal_html",
        list_bullets=True,
        alt_texts=False,
        links=False,
        form_fields=False,
        noscript=False,
    )
    base.update(options)

    def run(html: str) -> str:
        text = minimal_html_to_markdown(extract_plain_text(HTMLTree.parse(html), **base))
        return drop_navigation_lines(text)[0]

    return run


def _container_with_heuristics(html: str) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    from refinery.ingest.html import SKIP_IN_MAIN, find_main_container

    container = find_main_container(HTMLTree.parse(html))
    if container is None:
        return extract_html(html, main_container=False).text
    minimal = extract_plain_text(
        HTMLTree.parse(container.html),
        main_content=True,
        preserve_formatting="minimal_html",
        skip_elements=SKIP_IN_MAIN,
    )
    return drop_navigation_lines(minimal_html_to_markdown(minimal))[0]


VARIANTS = {
    "resiliparse, heuristics only (reader before)": lambda html: (
        extract_html(html, main_container=False).text
    ),
    "resiliparse main_content=False": _resiliparse(main_content=False),
    "resiliparse hidden_elements=True": _resiliparse(hidden_elements=True),
    "resiliparse list_bullets=False": _resiliparse(list_bullets=False),
    "resiliparse links+alt_texts": _resiliparse(links=True, alt_texts=True),
    "trafilatura": lambda html: extract_html(html, "trafilatura").text,
    "main container + heuristics inside it": _container_with_heuristics,
    "fix: main container, no heuristics (reader now)": lambda html: extract_html(html).text,
}


def pick_pages(n: int, seed: int = 0) -> list[Path]:
    pages = sorted(LIBRARY.glob("*.html"))
    fields = [p for p in pages if "field-list" in p.read_text(encoding="utf-8", errors="replace")]
    rest = [p for p in pages if p not in fields]
    random.Random(seed).shuffle(rest)
    return (fields + rest)[:n] if n else fields + rest


def measure(paths: list[Path], variants: dict, show_losses: int = 0) -> dict:
    units = {}
    for path in paths:
        html = decode_html(path.read_bytes()).text
        units[path.name] = (html, page_units(html))
    results = {}
    for name, run in variants.items():
        kept, total, pairs_kept, pairs, leaked, nav = Counter(), Counter(), 0, 0, 0, 0
        losses, seconds = [], 0.0
        for page, (html, u) in units.items():
            start = time.process_time()
            out = squash(run(html))
            seconds += time.process_time() - start
            for item in u["items"]:
                total[item["kind"]] += 1
                if all(piece in out for piece in item["text"]):
                    kept[item["kind"]] += 1
                elif item["kind"] == "toc in body":
                    continue
                else:
                    losses.append((page, item["kind"], item["show"]))
            pairs += len(u["pairs"])
            pairs_kept += sum(p in out for p in u["pairs"])
            nav += len(u["nav"])
            leaked += sum(n in out for n in u["nav"])
        results[name] = {
            "items_kept": sum(v for k, v in kept.items() if k != "toc in body"),
            "items": sum(v for k, v in total.items() if k != "toc in body"),
            "by_kind": {k: [kept[k], total[k]] for k in sorted(total)},
            "field_pairs_kept": pairs_kept,
            "field_pairs": pairs,
            "nav_leaked": leaked,
            "nav_units": nav,
            "cpu_s": round(seconds, 2),
            "losses": losses[:show_losses] if show_losses else [],
            "lost_by_page": dict(Counter(p for p, _, _ in losses).most_common(8)),
        }
    return results


def hand_checked() -> dict:
    """Must-keep snippets kept and boilerplate snippets leaked on the hand-checked pages
    (tests/fixtures/html_expectations.json), for the reader before, now, and trafilatura."""
    fixtures = ROOT / "tests" / "fixtures"
    pages = json.loads((fixtures / "html_expectations.json").read_text())["pages"]

    def norm(text: str) -> str:
        return " ".join(re.sub(r"[`*\\¶]", "", text).split())

    runs = {
        "resiliparse, heuristics only (reader before)": lambda h: extract_html(h, main_container=False).text,
        "trafilatura": lambda h: extract_html(h, "trafilatura").text,
        "fix: main container (reader now)": lambda h: extract_html(h).text,
    }
    scores = {}
    for name, run in runs.items():
        kept = leaked = n_keep = n_leak = 0
        for page in pages:
            out = norm(run(decode_html((fixtures / "html" / page["file"]).read_bytes()).text))
            n_keep += len(page["must_contain"])
            kept += sum(norm(s) in out for s in page["must_contain"])
            n_leak += len(page["must_not_contain"])
            leaked += sum(norm(s) in out for s in page["must_not_contain"])
        scores[name] = {"pages": len(pages), "kept": [kept, n_keep], "leaked": [leaked, n_leak]}
    return scores


def whole_doc_tree(root: Path = Path("/usr/share/doc")) -> dict:
    """Every HTML page Debian installed here, before and after the fix: how many pages have a main
    container, characters extracted, and the pages that lost text (lines before that are gone)."""
    paths = sorted(p for p in root.rglob("*.htm*") if p.is_file() and p.suffix in (".html", ".htm"))
    pages = with_container = chars_before = chars_after = 0
    lost_pages = []
    for path in paths:
        try:
            html = decode_html(path.read_bytes()[: 8 << 20]).text
        except ValueError:
            continue
        before = extract_html(html, main_container=False)
        after = extract_html(html)
        pages += 1
        with_container += "main_container" in after.meta
        chars_before += len(before.text)
        chars_after += len(after.text)
        # a line is lost when most of its words are nowhere in the new text (spacing and the
        # characters the heuristics used to drop, such as "→", do not count as losses)
        words_after = set(_WORD.findall(after.text))
        gone = []
        for line in dict.fromkeys(before.text.splitlines()):
            words = _WORD.findall(line)
            if (
                len(squash(line)) >= 10
                and words
                and sum(w not in words_after for w in words) > len(words) / 2
            ):
                gone.append(" ".join(line.split())[:100])
        if gone:
            lost_pages.append((str(path.relative_to(root)), len(gone), sorted(gone)[:3]))
    return {
        "pages": pages,
        "with_main_container": with_container,
        "chars_before": chars_before,
        "chars_after": chars_after,
        "pages_losing_lines": len(lost_pages),
        "losing": sorted(lost_pages, key=lambda x: -x[1])[:15],
    }


def _pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.1f} %)" if b else "—"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=40, help="0: every library page")
    parser.add_argument("--show-losses", type=int, default=0)
    parser.add_argument("--doc-tree", action="store_true", help="also compare on all of /usr/share/doc")
    parser.add_argument("--write-fixtures", action="store_true", help="copy the test pages and stop")
    args = parser.parse_args(argv)
    if not LIBRARY.is_dir():
        print(f"skipped: {LIBRARY} missing (apt-get install python3-doc)")
        return {}
    if args.write_fixtures:
        for path in write_fixtures():
            print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size:,} bytes)")
        return {}
    checked = hand_checked()
    print("Hand-checked set (tests/fixtures/html_expectations.json)\n")
    print("| variant | pages | main text kept | boilerplate leaked |\n|---|---|---|---|")
    for name, r in checked.items():
        print(f"| {name} | {r['pages']} | {_pct(*r['kept'])} | {_pct(*r['leaked'])} |")
    print()
    paths = pick_pages(args.pages)
    results = measure(paths, VARIANTS, args.show_losses)
    kinds = sorted({k for r in results.values() for k in r["by_kind"]})
    print(f"{len(paths)} pages of {LIBRARY} (every field-list page first, then a seeded sample)\n")
    head = ["variant", "items kept", *[f"{k} kept" for k in kinds], "field pairs kept", "nav leaked", "CPU s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, r in results.items():
        cells = [name, _pct(r["items_kept"], r["items"])]
        cells += [_pct(*r["by_kind"].get(k, [0, 0])) for k in kinds]
        cells += [
            _pct(r["field_pairs_kept"], r["field_pairs"]),
            _pct(r["nav_leaked"], r["nav_units"]),
            str(r["cpu_s"]),
        ]
        print("| " + " | ".join(cells) + " |")
    for name, r in results.items():
        if r["losses"]:
            print(f"\n{name}: first losses")
            for page, kind, show in r["losses"]:
                print(f"  {page} [{kind}] {show}")
    tree = whole_doc_tree() if args.doc_tree else {}
    if tree:
        print(
            f"\nAll HTML under /usr/share/doc: {tree['pages']} pages, "
            f"{tree['with_main_container']} with a main"
        )
        print(
            f"container; characters extracted {tree['chars_before']:,} before, {tree['chars_after']:,} now;"
        )
        print(f"{tree['pages_losing_lines']} pages lose a line of 10+ characters that was extracted before:")
        for page, n, sample in tree["losing"]:
            print(f"  {page}: {n} lines, e.g. {sample}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "html_lists.json").write_text(
        json.dumps(
            {"pages": [p.name for p in paths], "results": results, "hand_checked": checked, "doc_tree": tree},
            indent=1,
        )
    )
    return results


# -- fixtures ------------------------------------------------------------------------------------
FIXTURE_DIR = ROOT / "tests" / "fixtures" / "html" / "python3.11-doc" / "library"
# sqlite3.html is 295 kB: keep its page furniture (header, sidebar, footer) and the reference
# sections with field lists (connect(): Parameters/Return type; Connection: Raises), drop the rest.
SQLITE3_DROP = [
    "tutorial", "module-constants", "cursor-objects", "row-objects", "blob-objects",
    "prepareprotocol-objects", "exceptions", "sqlite-and-python-types",
    "default-adapters-and-converters", "how-to-guides", "explanation",
]  # fmt: skip


def write_fixtures() -> list[Path]:
    """Copy enum.html whole and a trimmed sqlite3.html into tests/fixtures/html (hand-checked set)."""
    from resiliparse.parse.html import HTMLTree

    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    enum = FIXTURE_DIR / "enum.html"
    enum.write_bytes((LIBRARY / "enum.html").read_bytes())
    tree = HTMLTree.parse((LIBRARY / "sqlite3.html").read_text(encoding="utf-8"))
    for section_id in SQLITE3_DROP:
        node = tree.document.query_selector(f"section#{section_id}")
        node.decompose()
    for entry in tree.document.query_selector_all("section#connection-objects dl.py"):
        if entry.query_selector("dl.field-list") is None and entry.parent.id != "connection-objects":
            entry.decompose()
    sqlite3 = FIXTURE_DIR / "sqlite3-reference.html"
    sqlite3.write_text(
        "<!DOCTYPE html>\n" + tree.document.query_selector("html").html + "\n", encoding="utf-8"
    )
    return [enum, sqlite3]


if __name__ == "__main__":
    main()
