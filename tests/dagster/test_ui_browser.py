"""The Dagster UI of a materialized demo, opened in headless Chromium (Debian's, via playwright).

One module fixture materializes the rule-based text chain for the bundled ``forum`` source and
the image–text chain for ``shapes`` through the real jobs, on a persistent instance in a
temporary home; starts ``dagster-webserver -m definitions`` against it on a free loopback port;
and photographs four pages with :mod:`scripts.ui_screenshots` (the script that makes the README's
screenshots). Each test then checks what one page showed a person: the expected assets and
figures, taken from the data at rest, and no error. Run alone with ``-m browser``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from PIL import Image

from refinery.multimodal import tiny_clip_train
from refinery.multimodal.clip_model import tiny_clip_missing_message
from refinery.storage import Storage
from scripts import ui_screenshots as ui

pytestmark = pytest.mark.browser

TEXT_CHAIN = [
    "raw_documents",
    "clean_documents",
    "heuristic_filtered",
    "exact_deduplicated",
    "fuzzy_deduplicated",
]
IMAGE_CHAIN = ["raw_image_text", "image_text_checked", "clip_scored", "clip_filtered"]


def _require_browser_and_clip() -> None:
    missing = ui.chromium_missing()
    if missing:  # CI installs chromium (scripts/setup.sh dev, as root): there it must not skip
        (pytest.fail if os.environ.get("CI") else pytest.skip)(missing)
    folder = tiny_clip_train.default_checkpoint_dir()
    if not tiny_clip_train.is_built(folder):
        pytest.fail(tiny_clip_missing_message(folder), pytrace=False)


@pytest.fixture(scope="module")
def ui_pages(tmp_path_factory):
    """(demo, {page name: Shot}) for the four pages, photographed at full size."""
    _require_browser_and_clip()
    tmp = tmp_path_factory.mktemp("ui")
    demo = ui.prepare_demo(tmp / "home")
    with ui.webserver(demo, tmp / "webserver.log") as server:  # loads while the chains run
        ui.materialize_demo(demo)
        shots = ui.capture(demo, server.wait_ready(), tmp / "shots", expect_dialog=True)
    return demo, {shot.name: shot for shot in shots}


def _picture(shot: ui.Shot) -> Image.Image:
    assert shot.path is not None and shot.path.is_file(), shot
    image = Image.open(shot.path).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20, f"{shot.name}: a blank screenshot"
    return image


def test_the_community_dialog_was_dismissed_and_recorded(ui_pages):
    """capture() waited for Dagster's first-visit dialog on the fresh instance, clicked Skip and
    checked it was gone before each screenshot; the instance recorded the skip."""
    demo, shots = ui_pages
    assert (Path(demo.dagster_home) / ".nux" / "nux.yaml").is_file()
    for shot in shots.values():
        assert ui.COMMUNITY_DIALOG not in shot.text, shot.name


def test_pages_show_no_error(ui_pages):
    _, shots = ui_pages
    assert set(shots) == {"lineage", "heuristic_filtered", "clip_scored", "run"}
    for shot in shots.values():
        assert ui.page_errors(shot.text) == [], (shot.name, shot.url)
        _picture(shot)


def test_global_lineage_shows_every_group_expanded(ui_pages):
    _, shots = ui_pages
    shot = shots["lineage"]
    assert "Global asset lineage" in shot.text
    for name in [*TEXT_CHAIN, *IMAGE_CHAIN, "raw_sft", "raw_videos", "corpus_report", "pretrain_corpus"]:
        assert name in shot.text, name
    assert _picture(shot).width >= 1600


def test_heuristic_filtered_partition_shows_its_reasons_and_histograms(ui_pages):
    demo, shots = ui_pages
    text = shots["heuristic_filtered"].text
    storage = Storage(demo.home / "storage")
    rejected = storage.read("heuristic_filtered", ui.TEXT_SOURCE, rejected=True, columns=["reason"])
    counts = rejected["reason"].value_counts()
    assert len(counts) >= 3
    for reason, rows in counts.items():  # the reasons table: every reason with its row count
        assert reason in text and str(rows) in text, reason
    for entry in (
        "removed_by_reason",
        "distribution_word_count",
        "distribution_dup_line_frac",
        "length_tokens",
    ):
        assert entry in text, entry
    assert f"Partition {ui.TEXT_SOURCE}" in text
    kept = storage.row_count("heuristic_filtered", ui.TEXT_SOURCE)
    assert re.search(rf"rows_out\s+{kept}\b", text), "rows_out"


def test_clip_scored_contact_sheet_is_an_image_that_loaded(ui_pages):
    _, shots = ui_pages
    shot = shots["clip_scored"]
    assert "contact_sheet" in shot.text
    sheet = next(
        line for line in shot.text.splitlines() if line.startswith("highest and lowest scored pairs")
    )
    size = sheet.rsplit(" ", 1)[1].rstrip("]")
    width, height = (int(v) for v in size.split("x"))
    assert "data:image/png;base64" in sheet and width > 200 and height > 100, sheet
    assert _picture(shot).height > 200


def test_run_page_shows_the_steps_of_the_text_chain(ui_pages):
    demo, shots = ui_pages
    text = shots["run"].text
    assert demo.runs["text"][:8] in text and "text_prefilter" in text
    assert "RUN_SUCCESS" in text and f"partition: {ui.TEXT_SOURCE}" in text
    for step in TEXT_CHAIN:
        assert step in text, step
