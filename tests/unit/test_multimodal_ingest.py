"""Reading the image–text and video inboxes: every pair or question kept or quarantined with its
reason, images and videos checked by decoding them, and the single-modality rules."""

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from refinery.multimodal import synthetic
from refinery.multimodal.image_text_check import ImageTextCheckParams, check_batch
from refinery.multimodal.image_text_reader import ImageTextIngestParams, ImageTextReader
from refinery.multimodal.images import decode_rgb, inspect_image
from refinery.multimodal.records import BadRecord, iter_records
from refinery.multimodal.video_reader import VideoReaderSource, probe_video
from refinery.multimodal.video_synth import Stretch, write_stretches


def encoded(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def scene_image(seed: int, size: int = 96, height: int | None = None) -> Image.Image:
    import random

    return synthetic.render(synthetic.random_scene(random.Random(seed)), size, height)


def read_all(reader) -> tuple[list[dict], list[dict]]:
    rows, quarantine = [], []
    for batch in reader.batches():
        rows += batch.documents
        quarantine += batch.quarantine
    return rows, quarantine


# -- images -------------------------------------------------------------------------------------
def test_inspect_image_names_what_is_wrong():
    jpeg, png = encoded(scene_image(1)), encoded(scene_image(2), "PNG")
    assert inspect_image(jpeg)[0].format == "JPEG" and inspect_image(png)[0].width == 96
    assert inspect_image(b"")[1][0] == "empty_file"
    assert inspect_image(b"GIF89a not really")[1][0] == "unreadable_image"
    assert inspect_image(jpeg[: len(jpeg) // 2])[1][0] == "truncated_image"
    assert inspect_image(png[: len(png) // 2])[1][0] in ("truncated_image", "unreadable_image")
    assert inspect_image(jpeg, max_pixels=96 * 96 - 1)[1][0] == "image_too_large"


def test_decode_rgb_flattens_alpha_palette_and_16_bit():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert decode_rgb(encoded(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)  # transparent → white
    grey16 = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert decode_rgb(encoded(grey16, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    assert decode_rgb(encoded(Image.new("P", (4, 4)), "PNG")).mode == "RGB"


# -- the image–text inbox -----------------------------------------------------------------------
def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_image_text_reader_keeps_or_quarantines_every_input(tmp_path):
    src = tmp_path / "src"
    (src / "img").mkdir(parents=True)
    good = {f"img/{i}.jpg": encoded(scene_image(i)) for i in range(4)}
    for name, data in good.items():
        (src / name).write_bytes(data)
    (src / "img" / "trunc.jpg").write_bytes(good["img/0.jpg"][:300])
    (src / "img" / "zero.png").write_bytes(b"")
    (src / "img" / "orphan.png").write_bytes(encoded(scene_image(9), "PNG"))
    (tmp_path / "outside.jpg").write_bytes(good["img/1.jpg"])
    records = [
        {
            "id": "a",
            "image": "img/0.jpg",
            "caption": "a red circle",
            "url": "https://x/0",
            "license": "cc-by",
        },
        {"id": "b", "image": "img/1.jpg", "caption": "a blue square"},
        {"id": "a", "image": "img/2.jpg", "caption": "duplicate id"},
        {"image": "img/trunc.jpg", "caption": "truncated"},
        {"image": "img/zero.png", "caption": "zero bytes"},
        {"image": "img/missing.jpg", "caption": "no such file"},
        {"image": "../outside.jpg", "caption": "escapes the source"},
        {"image": "img/3.jpg", "caption": ""},
        {"image": "img/3.jpg"},
        {"image": "img/3.jpg", "caption": 42},
        {"caption": "no image field"},
    ]
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in records) + b"{broken\n\n"
    (src / "captions.jsonl").write_bytes(lines)
    (src / "more.csv").write_text("image,caption\nimg/2.jpg,two green triangles\nimg/1.jpg,x,extra\n")
    pq.write_table(
        pa.Table.from_pylist([{"file_name": "img/3.jpg", "text": "a yellow cross"}]), src / "hf.parquet"
    )
    shard = tar_bytes(
        [
            ("k1.jpg", good["img/0.jpg"]),
            ("k1.txt", b"a caption from txt"),
            ("k2.jpg", good["img/1.jpg"]),
            ("k2.json", json.dumps({"caption": "from json", "url": "https://x/k2"}).encode()),
            ("k2.cls", b"7"),
            ("k3.jpg", good["img/2.jpg"]),
            ("k4.txt", b"no image here"),
            ("sub/k5.png", encoded(scene_image(5), "PNG")),
            ("sub/k5.txt", b"a sample in a folder"),
        ]
    )
    (src / "shard-0.tar").write_bytes(shard)
    (src / "shard-1.tar").write_bytes(shard[: len(shard) // 2])
    (src / "notes.md").write_text("hello")

    reader = ImageTextReader(src, "src", ImageTextIngestParams(batch_rows=3))
    rows, quarantine = read_all(reader)
    by_caption = {r["caption"]: r for r in rows}
    assert set(by_caption) >= {"a red circle", "a blue square", "two green triangles", "a yellow cross"}
    assert by_caption["a red circle"]["image"] == good["img/0.jpg"]  # the original bytes, unchanged
    assert json.loads(by_caption["a red circle"]["meta"]) == {"license": "cc-by"}
    assert by_caption["from json"]["url"] == "https://x/k2" and by_caption["from json"]["id"] == "k2"
    assert json.loads(by_caption["from json"]["meta"])["shard_members"] == ["cls"]
    assert by_caption["a sample in a folder"]["image_file"] == "shard-0.tar:sub/k5.png"
    assert by_caption["a red circle"]["width"] == 96 and by_caption["a red circle"]["image_format"] == "JPEG"
    reasons = sorted(q["reason"] for q in quarantine)
    for expected in (
        "duplicate_id",
        "truncated_image",
        "empty_file",
        "image_not_found",
        "image_outside_source",
        "missing_caption",
        "caption_not_string",
        "missing_image",
        "malformed_json",
        "malformed_row",
        "corrupt_archive",
        "unsupported_file_type",
    ):
        assert expected in reasons, expected
    orphan = [q for q in quarantine if q["file"] == "img/orphan.png"]
    assert orphan and orphan[0]["reason"] == "missing_caption" and orphan[0]["raw"].startswith(b"\x89PNG")
    # Every input accounted for: 11 table records + 1 broken line, 2 CSV rows, 1 Parquet row, 5 samples
    # of shard 0, what shard 1 yields before it breaks, the orphan image and the stray file.
    shard_1 = sum(1 for r in rows + quarantine if r["file"] == "shard-1.tar")
    assert len(rows) + len(quarantine) == 12 + 2 + 1 + 5 + shard_1 + 1 + 1
    assert reader.stats.documents == len(rows) and reader.stats.quarantined == len(quarantine)


def test_records_reader_reports_bad_lines(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n[1, 2]\n\xff\xfe\n{"b": 2}\n')
    items = list(iter_records(path))
    assert [i.line for i in items] == [1, 2, 3, 4]
    assert [i.reason for i in items if isinstance(i, BadRecord)] == ["not_an_object", "undecodable_bytes"]
    broken = tmp_path / "b.parquet"
    broken.write_bytes(b"PAR1 nonsense")
    assert next(iter_records(broken)).reason == "unreadable_parquet"


# -- the single-modality checks -----------------------------------------------------------------
def test_checks_name_the_first_failed_rule():
    ok = encoded(scene_image(1, 128))
    cases = {
        "fine": (ok, "a red circle on the left of the picture"),
        "tiny": (encoded(scene_image(1, 24)), "a red circle"),
        "banner": (encoded(scene_image(1, 400, 80)), "a red circle"),
        "blank": (encoded(Image.new("RGB", (100, 100), (9, 9, 9))), "a dark picture"),
        "undecodable": (b"not an image", "a red circle"),
        "file": (ok, "DSC_0042.JPG"),
        "placeholder": (ok, "Untitled"),
        "url": (ok, "https://example.org/img/1.jpg"),
        "short": (ok, "circle"),
        "long": (ok, " ".join(["word"] * 200)),
        "symbols": (ok, "# # # # red # circle # # #"),
        "repeat": (ok, "red red red red red red circle"),
        "french": (ok, "trois cercles rouges posés sur un fond gris clair dans une image carrée"),
        "mojibake": (ok, "a cafÃ© with two   blue squares"),
    }
    frame = __import__("pandas").DataFrame(
        {
            "id": list(cases),
            "caption": [c for _, c in cases.values()],
            "image": [i for i, _ in cases.values()],
        }
    )
    result = check_batch(frame, ImageTextCheckParams())
    reasons = dict(zip(result.rejected["id"], result.rejected["reason"], strict=True))
    assert reasons == {
        "tiny": "image.too_small",
        "banner": "image.aspect_ratio",
        "blank": "image.blank",
        "undecodable": "image.decode_failed",
        "file": "caption.file_name",
        "placeholder": "caption.placeholder",
        "url": "caption.url",
        "short": "caption.too_few_words",
        "long": "caption.too_many_words",
        "symbols": "caption.too_many_hashes",
        "repeat": "caption.repetitive",
        "french": "caption.not_english",
    }
    kept = result.kept.set_index("id")
    assert set(kept.index) == {"fine", "mojibake"}
    assert (
        kept.loc["mojibake", "caption"] == "a café with two blue squares"
        and kept.loc["mojibake", "caption_changed"]
    )
    assert not kept.loc["fine", "caption_changed"] and kept.loc["fine", "caption_words"] == 9
    relaxed = check_batch(
        frame, ImageTextCheckParams(min_side=None, max_aspect_ratio=None, min_caption_words=None)
    )
    assert {"tiny", "banner", "short"} <= set(relaxed.kept["id"])


# -- the video inbox ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    for name in ("a.mp4", "b.avi", "c.mkv", "d.webm"):
        write_stretches(folder / name, [Stretch(1, "red", "circle"), Stretch(1)], fps=8, width=64, height=48)
    return folder


def test_probe_reads_every_container_and_refuses_broken_files(videos, tmp_path):
    for name in ("a.mp4", "b.avi", "c.mkv", "d.webm"):
        probe, problem = probe_video(videos / name)
        assert problem is None, (name, problem)
        assert (
            abs(probe.frames - 16) <= 1
            and abs(probe.fps - 8) < 0.01
            and (probe.width, probe.height) == (64, 48)
        )
    data = (videos / "a.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "noise.mkv").write_bytes(np.random.default_rng(0).bytes(4000))
    assert probe_video(tmp_path / "cut.mp4")[1][0] == "undecodable_video"
    assert probe_video(tmp_path / "zero.mp4")[1][0] == "empty_file"
    assert probe_video(tmp_path / "noise.mkv")[1][0] == "undecodable_video"


def test_video_reader_one_row_per_question_and_a_reason_for_the_rest(videos, tmp_path):
    src = tmp_path / "src"
    (src / "clips").mkdir(parents=True)
    for name in ("a.mp4", "b.avi", "d.webm"):
        (src / "clips" / name).write_bytes((videos / name).read_bytes())
    (src / "clips" / "bad.mp4").write_bytes(b"\x00" * 100)
    (src / "clips" / "unasked_bad.mkv").write_bytes(b"\x00" * 100)
    (src / "readme.txt").write_text("?")
    (src / "questions.csv").write_text(
        "id,video,question,answer\n"
        "1,clips/a.mp4,a red circle,early\n"
        "2,clips/a.mp4,a blue square,\n"
        "3,clips/bad.mp4,a red circle,\n"
        "4,clips/nowhere.mp4,a red circle,\n"
        "5,clips/b.avi,,\n"
        "6,../escape.mp4,a red circle,\n"
        "1,clips/b.avi,a duplicate id,\n"
    )
    reader = VideoReaderSource(src, "src")
    rows, quarantine = read_all(reader)
    assert [r["id"] for r in rows] == ["1", "2"]
    assert rows[0]["answer"] == "early" and rows[0]["video_file"] == "clips/a.mp4"
    assert rows[0]["video_id"] == rows[1]["video_id"] and len(rows[0]["video_id"]) == 20
    reasons = {(q["file"], q["reason"]) for q in quarantine}
    assert reasons == {
        ("questions.csv", "undecodable_video"),
        ("questions.csv", "video_not_found"),
        ("questions.csv", "missing_question"),
        ("questions.csv", "video_outside_source"),
        ("questions.csv", "duplicate_id"),
        ("readme.txt", "unsupported_file_type"),
        ("clips/unasked_bad.mkv", "undecodable_video"),
        ("clips/d.webm", "video_without_questions"),
    }
    assert len(rows) + len(quarantine) == 7 + 1 + 2  # questions, stray file, two videos nobody asks about
