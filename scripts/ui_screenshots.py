"""The Dagster UI of a materialized demo, seen in a real browser: screenshots for the README.

It materializes only what the pages need (the rule-based text chain for one bundled text source,
the image–text chain for one bundled image source) on a persistent Dagster instance in a
temporary home, starts ``dagster-webserver`` on 127.0.0.1 against it, opens the pages in headless
Chromium (Debian's ``/usr/bin/chromium`` driven by playwright; playwright's own browser builds are
never downloaded), dismisses Dagster's first-visit community dialog, checks that each page shows
its assets and no error, and saves a downscaled PNG of each:

- ``lineage.png``: the global asset lineage;
- ``heuristic_filtered.png``: one partition's metadata (removal reasons, histograms);
- ``clip_scored.png``: the contact sheet of one partition;
- ``run.png``: the page of the run that materialized the text chain.

    .venv/bin/python scripts/ui_screenshots.py --out docs/screenshots

tests/dagster/test_ui_browser.py drives the same functions and asserts on what the pages show.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TEXT_SOURCE = "forum"  # the bundled text source with the most removal reasons
IMAGE_SOURCE = "shapes"  # the bundled image–text source of loose images and a captions table
# What no page may show: Dagster's error boundary, GraphQL and Python errors.
ERROR_PATTERNS = re.compile(
    r"Something went wrong|Unexpected GraphQL error|GraphQL error|PythonError|Traceback|"
    r"Error loading|Failed to load|\bError\b"
)


@dataclass
class Demo:
    """What was materialized: the home, the Dagster home, and the ids of the runs."""

    home: Path
    dagster_home: Path
    runs: dict[str, str] = field(default_factory=dict)  # "text" / "image_text" -> run id


@dataclass
class Shot:
    name: str
    url: str
    text: str  # the page's visible text when photographed
    path: Path | None = None


# -- materializing -------------------------------------------------------------------------------
def prepare_demo(home: Path) -> Demo:
    """The bundled text and image samples in ``home``'s inbox and an instance config (the
    project's, with telemetry off) in ``home/dagster``, the DAGSTER_HOME of the demo."""
    import dagster as dg

    from refinery.paths import Layout
    from refinery.sample.multimodal_sample import build_image_text_sample
    from refinery.sample.text_sample import build_text_sample
    from refinery_cli import launch

    layout = Layout.at(home)
    build_text_sample(layout.inbox_kind("text"))
    build_image_text_sample(layout.inbox_kind("image_text"), seed=5, pairs=24)
    layout.dagster_home.mkdir(parents=True, exist_ok=True)
    (layout.dagster_home / "dagster.yaml").write_text(launch.INSTANCE_YAML)
    # Create the SQLite storages now: a web server and a run starting on a fresh instance at once
    # race to migrate them ("Error while importing code" in the code server).
    dg.DagsterInstance.from_config(str(layout.dagster_home)).dispose()
    return Demo(layout.home, layout.dagster_home)


def materialize_demo(demo: Demo) -> Demo:
    """The real jobs of ``definitions`` for the two chains the pages show, as ``refinery run``
    launches them, on the demo's persistent instance. Resources point at the demo's home
    explicitly, so this process's environment is left as it was."""
    import dagster as dg

    from definitions import defs
    from refinery import names
    from resources import build_resources

    resources = build_resources(
        "local", home=str(demo.home), device="cpu", batch_size=16, dataloader_workers=0
    )
    chains = [
        ("text", names.TEXT_PREFILTER_JOB, "text_source", TEXT_SOURCE),
        ("image_text", names.IMAGE_TEXT_PIPELINE_JOB, "image_text_source", IMAGE_SOURCE),
    ]
    with dg.DagsterInstance.from_config(str(demo.dagster_home)) as instance:
        for name, job, partitions, source in chains:
            instance.add_dynamic_partitions(partitions, [source])
            result = defs.resolve_job_def(job).execute_in_process(
                partition_key=source,
                instance=instance,
                resources=resources,
                raise_on_error=False,
                tags={"refinery/launched_by": "ui_screenshots"},
            )
            if not result.success:
                raise RuntimeError(f"materializing the {name} chain for {source!r} failed")
            demo.runs[name] = result.run_id
    return demo


# -- the web server ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(base: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{base}/graphql", json.dumps({"query": query}).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


LOADED_QUERY = (
    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError "
    "{ __typename ... on PythonError { message } } } } } }"
)


@dataclass
class Webserver:
    base: str  # http://127.0.0.1:<port>
    proc: subprocess.Popen
    log: Path

    def wait_ready(self, timeout: float = 240) -> str:
        """Wait until the code location has loaded; returns the base URL."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-3000:]
                raise RuntimeError(f"dagster-webserver exited with {self.proc.returncode}:\n{tail}")
            try:
                entries = _graphql(self.base, LOADED_QUERY)["data"]["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    failed = [e["locationOrLoadError"] for e in entries]
                    failed = [f for f in failed if f and f["__typename"] == "PythonError"]
                    if failed:
                        raise RuntimeError(f"the code location did not load: {failed[0]['message']}")
                    return self.base
            except (OSError, KeyError, TypeError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"dagster-webserver not ready after {timeout}s:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.5)


@contextlib.contextmanager
def webserver(demo: Demo, log: Path) -> Iterator[Webserver]:
    """``dagster-webserver -m definitions`` on a free loopback port against the demo's instance,
    started at once (it loads the definitions while the caller materializes: the two imports of
    torch and friends overlap); stopped with its code server on the way out, also on failure."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(
        DAGSTER_HOME=str(demo.dagster_home),
        REFINERY_HOME=str(demo.home),
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
    )
    port = free_port()
    binary = Path(sys.executable).parent / "dagster-webserver"
    args = [str(binary), "-m", "definitions", "-h", "127.0.0.1", "-p", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield Webserver(f"http://127.0.0.1:{port}", proc, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# -- the browser ---------------------------------------------------------------------------------
def chromium_missing() -> str | None:
    """Why the browser cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} not found: install Debian's chromium (scripts/setup.sh dev does, as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: install the dev extra (scripts/setup.sh dev)"
    return None


@contextlib.contextmanager
def browser(width: int = 1440, height: int = 900) -> Iterator[object]:
    """A headless Chromium page with a fresh profile (so Dagster's first-visit dialogs appear,
    and are dismissed, every time)."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
            device_scale_factor=1,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(90_000)  # generous: a loaded 2-core machine lays out slowly
            yield page
        finally:
            context.close()


COMMUNITY_DIALOG = "Join the Dagster community"  # Dagster's first-visit dialog (once per instance)


def community_dialog(page):
    return page.get_by_role("dialog").filter(has_text=COMMUNITY_DIALOG)


def dismiss_community_dialog(page, wait_ms: int = 0) -> bool:
    """Skip Dagster's "Join the Dagster community" dialog if it shows within ``wait_ms``; returns
    whether it was there. Dagster records the skip in the instance (``$DAGSTER_HOME/.nux``), so it
    appears on the first visit to a fresh instance only."""
    dialog = community_dialog(page)
    try:
        dialog.wait_for(state="visible", timeout=max(wait_ms, 1))
    except Exception:  # playwright's TimeoutError: no dialog this time
        return False
    dialog.get_by_role("button", name="Skip").click()
    dialog.wait_for(state="hidden")
    return True


def page_errors(text: str) -> list[str]:
    """The error messages a page's visible text shows (none on a healthy page)."""
    return sorted({m.group(0) for m in ERROR_PATTERNS.finditer(text)})


def _ready(page, *texts: str) -> str:
    """Wait until every text shows, then for the network to settle; the page's visible text."""
    for text in texts:
        page.get_by_text(text, exact=False).first.wait_for(state="visible")
    with contextlib.suppress(Exception):
        page.wait_for_load_state("networkidle", timeout=10_000)
    page.wait_for_timeout(500)  # let the last layout pass (graph fitting, charts) finish
    if community_dialog(page).count():
        raise RuntimeError("Dagster's community dialog is still open")
    return page.inner_text("body")


def group_names(base: str) -> list[str]:
    query = "{ assetNodes { groupName } }"
    return sorted({n["groupName"] for n in _graphql(base, query)["data"]["assetNodes"]})


def asset_names(base: str) -> list[str]:
    query = "{ assetNodes { assetKey { path } } }"
    return sorted("/".join(n["assetKey"]["path"]) for n in _graphql(base, query)["data"]["assetNodes"])


# The lower right corner of the drawn graph: the union of the elements that show a node's name.
GRAPH_EXTENT = """(names) => {
    const wanted = new Set(names);
    let right = 0, bottom = 0;
    for (const el of document.querySelectorAll('body *')) {
        if (el.children.length || !wanted.has(el.textContent.trim())) continue;
        const box = el.getBoundingClientRect();
        if (!box.width || box.left < 60) continue;  // hidden, or in the folded navigation
        right = Math.max(right, box.right);
        bottom = Math.max(bottom, box.bottom);
    }
    return [Math.ceil(right), Math.ceil(bottom)];
}"""


def shoot_lineage(page, base: str, path: Path | None) -> Shot:
    """The global lineage with every group expanded (the UI keeps that choice in local
    storage) and the navigation and asset tree folded away, so the graph gets the width."""
    url = f"{base}/asset-groups"
    page.goto(url)
    page.get_by_text("Global asset lineage").wait_for()
    expanded = ",".join(f"global@global:{g}" for g in group_names(base))
    page.evaluate(
        """([key, expanded]) => {
            localStorage.setItem(key, JSON.stringify({expanded}));
            localStorage.setItem('dagster-nav-collapsed', 'true');
        }""",
        ["asset-graph-open-graph-nodes-global-__GLOBAL__", expanded],
    )
    page.reload()
    dismiss_community_dialog(page)
    page.get_by_text("heuristic_filtered").first.wait_for()
    tree = page.locator('button:has([aria-label="panel_show_right"])')
    if tree.count():
        tree.last.click()  # fold the asset tree beside the graph
    text = _ready(page, "heuristic_filtered", "clip_scored", "raw_documents")
    if path is not None:  # the page down to the graph's lower right corner: no empty canvas
        right, bottom = page.evaluate(GRAPH_EXTENT, sorted(set(asset_names(base)) | set(group_names(base))))
        size = page.viewport_size
        clip = {
            "x": 0,
            "y": 0,
            "width": min(size["width"], right + 48),
            "height": min(size["height"], bottom + 48),
        }
        page.screenshot(path=path, clip=clip)
    return Shot("lineage", url, text, path)


def shoot_heuristic_metadata(page, base: str, path: Path | None) -> Shot:
    """One partition's materialization of heuristic_filtered: reasons table and histograms."""
    url = f"{base}/assets/heuristic_filtered?view=events&partition={TEXT_SOURCE}"
    page.goto(url)
    dismiss_community_dialog(page)
    text = _ready(page, "removed_by_reason", "distribution_word_count", f"Partition {TEXT_SOURCE}")
    if path is not None:
        page.screenshot(path=path)
    return Shot("heuristic_filtered", url, text, path)


def shoot_contact_sheet(page, base: str, path: Path | None) -> Shot:
    """clip_scored's contact sheet: the markdown metadata value (images inline) in its dialog."""
    url = f"{base}/assets/clip_scored?view=events&partition={IMAGE_SOURCE}"
    page.goto(url)
    dismiss_community_dialog(page)
    _ready(page, "contact_sheet", "distribution_clip_cosine")
    page.locator("tr", has_text="contact_sheet").get_by_text("[Show Markdown]").click()
    sheet = page.get_by_role("dialog").filter(has_text="contact_sheet")
    sheet.locator("img").first.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[role=dialog] img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    # The sheet is one rendered PNG (thumbnails, scores, captions): describe it by its alt text,
    # source type and decoded size, so a test can tell a shown image from a broken one.
    images = sheet.locator("img").evaluate_all(
        "els => els.map(i => `${i.alt} [${i.src.slice(0, 22)} ${i.naturalWidth}x${i.naturalHeight}]`)"
    )
    text = sheet.inner_text() + "\n" + "\n".join(images)
    if path is not None:
        sheet.screenshot(path=path)
    return Shot("clip_scored", url, text, path)


def shoot_run(page, base: str, run_id: str, path: Path | None) -> Shot:
    """The page of the run that materialized the text chain: its steps on the timeline and events."""
    url = f"{base}/runs/{run_id}"
    page.goto(url)
    dismiss_community_dialog(page)
    text = _ready(page, "RUN_SUCCESS", "fuzzy_deduplicated", "Success")
    if path is not None:
        page.screenshot(path=path)
    return Shot("run", url, text, path)


def capture(demo: Demo, base: str, out: Path | None, expect_dialog: bool = False) -> list[Shot]:
    """Every page, photographed into ``out`` (full-size PNGs; None: only read the pages)."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    def target(name: str) -> Path | None:
        return None if out is None else out / f"{name}.png"

    with browser(1920, 1080) as page:
        try:
            page.goto(f"{base}/asset-groups")
            page.get_by_text("Global asset lineage").wait_for()
            if not dismiss_community_dialog(page, wait_ms=20_000) and expect_dialog:
                raise RuntimeError("Dagster's community dialog never showed on a fresh instance")
            shots = [shoot_lineage(page, base, target("lineage"))]
            page.set_viewport_size({"width": 1440, "height": 1500})
            shots.append(shoot_heuristic_metadata(page, base, target("heuristic_filtered")))
            shots.append(shoot_contact_sheet(page, base, target("clip_scored")))
            page.set_viewport_size({"width": 1440, "height": 900})
            shots.append(shoot_run(page, base, demo.runs["text"], target("run")))
        except Exception:
            if out is not None:  # what the browser showed when it gave up, for the failure report
                page.screenshot(path=out / "failure.png")
                (out / "failure.txt").write_text(f"{page.url}\n\n{page.inner_text('body')}")
            raise
    return shots


def shrink(source: Path, target: Path, max_width: int = 1200, colours: int = 128) -> Path:
    """A README-sized copy: white margins trimmed, at most ``max_width`` wide, a palette PNG."""
    from PIL import Image, ImageChops, ImageOps

    with Image.open(source) as image:
        rgb = image.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, (255, 255, 255))).getbbox()
    if box:
        left, top, right, bottom = box
        rgb = rgb.crop(
            (max(left - 8, 0), max(top - 8, 0), min(right + 8, rgb.width), min(bottom + 8, rgb.height))
        )
    if rgb.width > max_width:
        rgb = ImageOps.contain(rgb, (max_width, rgb.height), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    rgb.quantize(colours, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go")
    parser.add_argument("--home", type=Path, default=None, help="REFINERY_HOME to build (default: temporary)")
    parser.add_argument("--max-width", type=int, default=1200, help="downscale the PNGs to this width")
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:  # run as a file: definitions, refinery_cli and assets live at the root
        sys.path.insert(0, str(ROOT))
    missing = chromium_missing()
    if missing:
        print(f"ui_screenshots: {missing}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="refinery-ui-") as tmp:
        started = time.perf_counter()
        demo = prepare_demo(args.home or Path(tmp) / "home")
        with webserver(demo, Path(tmp) / "webserver.log") as server:
            materialize_demo(demo)
            print(f"materialized in {time.perf_counter() - started:.0f}s: runs {demo.runs}")
            shots = capture(demo, server.wait_ready(), Path(tmp) / "full")
        print(f"pages photographed after {time.perf_counter() - started:.0f}s")
        for shot in shots:
            errors = page_errors(shot.text)
            if errors:
                print(f"ui_screenshots: {shot.name} shows {errors}", file=sys.stderr)
                return 1
            saved = shrink(shot.path, args.out / f"{shot.name}.png", args.max_width)
            print(f"  {saved}  ({saved.stat().st_size // 1024} KB)  {shot.url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
