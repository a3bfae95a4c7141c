"""The bundled multimodal sample: generated image–caption pairs and videos with questions.

Image–text (``inbox/image_text/``):

- ``shapes``: PNG and JPEG scenes in ``images/`` with a ``captions.jsonl``; about a quarter of
  the captions belong to another scene (what CLIP filtering should remove), plus what the
  checks reject (a tiny image, a 5:1 banner, a blank image, a file-name caption, a placeholder,
  a French caption) and what ingest quarantines (a truncated JPEG, a zero-byte file, a file that
  is not an image, an empty caption, a record without a caption, a caption row naming a missing
  image, an image no row names, a malformed line, a stray README).
- ``shards``: WebDataset ``.tar`` shards (``key.jpg`` + ``key.txt`` or ``key.json``), with a
  sample lacking its caption, one lacking its image, and a truncated shard.
- ``tables``: the same layout as ``shapes`` with a CSV and a Parquet captions table
  (``file_name``/``text`` columns, HF imagefolder style).

Video (``inbox/video/``, source ``clips``): a video where a red circle shows only from second 4
to 8 (a blue square before, a green triangle after), videos of other shapes in .avi, .mkv and
.webm, a truncated .mp4, a video nobody asks about, and a questions file with a question about a
missing video and an empty question.

Everything is generated from a seed, so the sample is the same on every machine.
"""

from __future__ import annotations

import csv
import io
import json
import random
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from refinery.multimodal import synthetic
from refinery.multimodal.video_synth import Stretch, write_stretches

IMAGE_TEXT_SOURCES = ("shapes", "shards", "tables")
RED_CIRCLE_VIDEO = "red_circle.mp4"
RED_CIRCLE_SECONDS = (4.0, 8.0)  # where the red circle shows in RED_CIRCLE_VIDEO


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def generated_pairs(
    rng: random.Random, n: int, mismatched_share: float = 0.25
) -> list[tuple[Image.Image, str, bool]]:
    """(image, caption, caption is true of the image) for ``n`` random scenes."""
    pairs = []
    for _ in range(n):
        scene = synthetic.random_scene(rng)
        size = rng.choice((96, 128, 160))
        width, height = (size, size) if rng.random() < 0.6 else (size * 4 // 3, size)
        image = synthetic.render(scene, width, height)
        matched = rng.random() >= mismatched_share
        caption = synthetic.caption_for(scene, rng) if matched else synthetic.mismatched_caption(scene, rng)
        pairs.append((image, caption.text, matched))
    return pairs


def _shapes(folder: Path, rng: random.Random, n: int) -> None:
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (image, caption, matched) in enumerate(generated_pairs(rng, n)):
        fmt, ext = ("PNG", "png") if i % 3 == 0 else ("JPEG", "jpg")
        (images / f"scene_{i:03d}.{ext}").write_bytes(_encode(image, fmt))
        path = f"images/scene_{i:03d}.{ext}"
        url = f"https://example.org/shapes/{i}"
        records.append({"id": f"s{i:03d}", "image": path, "caption": caption, "url": url, "matched": matched})
    scene = synthetic.random_scene(rng, colour="red", shape="circle", count=1)
    full = _encode(synthetic.render(scene, 128), "JPEG")
    (images / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (images / "empty.jpg").write_bytes(b"")
    (images / "not_an_image.png").write_bytes(b"this is text, not a PNG\n" * 4)
    (images / "tiny.png").write_bytes(_encode(synthetic.render(scene, 24), "PNG"))
    (images / "banner.jpg").write_bytes(_encode(synthetic.render(scene, 400, 80), "JPEG"))
    (images / "blank.png").write_bytes(_encode(Image.new("RGB", (128, 128), (128, 128, 128)), "PNG"))
    (images / "orphan.jpg").write_bytes(full)
    for name in ("file_name", "placeholder", "french", "empty_caption", "no_caption"):
        (images / f"{name}.jpg").write_bytes(
            _encode(synthetic.render(synthetic.random_scene(rng), 128), "JPEG")
        )
    records += [
        {"id": "truncated", "image": "images/truncated.jpg", "caption": "a red circle in the center"},
        {"id": "empty", "image": "images/empty.jpg", "caption": "a red circle"},
        {"id": "not_an_image", "image": "images/not_an_image.png", "caption": "a red circle"},
        {"id": "tiny", "image": "images/tiny.png", "caption": "a red circle in the picture"},
        {"id": "banner", "image": "images/banner.jpg", "caption": "a red circle on a wide banner"},
        {"id": "blank", "image": "images/blank.png", "caption": "a grey square filling the picture"},
        {"id": "file_name", "image": "images/file_name.jpg", "caption": "IMG_2031.JPG"},
        {"id": "placeholder", "image": "images/placeholder.jpg", "caption": "untitled"},
        {
            "id": "french",
            "image": "images/french.jpg",
            "caption": "trois cercles rouges posés sur un fond gris clair dans une image carrée",
        },
        {"id": "empty_caption", "image": "images/empty_caption.jpg", "caption": "   "},
        {"id": "no_caption", "image": "images/no_caption.jpg"},
        {"id": "missing", "image": "images/does_not_exist.jpg", "caption": "a blue square"},
    ]
    (folder / "captions.jsonl").write_bytes(
        _jsonl(records) + b'{"id": "broken", "image": "images/x.jpg", "cap\n'
    )
    (folder / "README.txt").write_text("Generated scenes with captions.\n")


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


def _shards(folder: Path, rng: random.Random, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    key = 0
    for shard in range(2):
        with tarfile.open(folder / f"shard-{shard:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for image, caption, matched in generated_pairs(rng, n // 2):
                name = f"{key:09d}"
                _tar_member(tar, f"{name}.jpg", _encode(image, "JPEG"))
                if key % 2:
                    _tar_member(tar, f"{name}.txt", caption.encode())
                else:
                    record = {"caption": caption, "url": f"https://example.org/wds/{key}", "matched": matched}
                    _tar_member(tar, f"{name}.json", json.dumps(record).encode())
                key += 1
            if shard == 1:
                lone = synthetic.render(synthetic.random_scene(rng), 128)
                _tar_member(tar, f"{key:09d}.jpg", _encode(lone, "JPEG"))  # no caption
                _tar_member(tar, f"{key + 1:09d}.txt", b"a caption without its image")
                key += 2
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for image, caption, _ in generated_pairs(rng, 4):
            _tar_member(tar, f"{key:09d}.jpg", _encode(image, "JPEG"))
            _tar_member(tar, f"{key:09d}.txt", caption.encode())
            key += 1
    data = buffer.getvalue()
    (folder / "shard-00002.tar").write_bytes(data[: len(data) * 5 // 8])  # cut mid-member


def _tables(folder: Path, rng: random.Random, n: int) -> None:
    images = folder / "photos"
    images.mkdir(parents=True, exist_ok=True)
    rows_csv, rows_parquet = [], []
    for i, (image, caption, _) in enumerate(generated_pairs(rng, n)):
        (images / f"p{i:03d}.jpg").write_bytes(_encode(image, "JPEG"))
        if i % 2:
            rows_csv.append({"id": f"c{i}", "image": f"photos/p{i:03d}.jpg", "caption": caption, "url": ""})
        else:
            rows_parquet.append({"file_name": f"photos/p{i:03d}.jpg", "text": caption})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["id", "image", "caption", "url"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows_csv)
    (folder / "captions.csv").write_text(out.getvalue())
    pq.write_table(pa.Table.from_pylist(rows_parquet), folder / "metadata.parquet")


def _files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def build_image_text_sample(inbox_dir: Path, seed: int = 5, pairs: int = 40) -> dict[str, int]:
    """Write the image–text sample under ``inbox_dir`` (``inbox/image_text``); returns files per source."""
    inbox_dir = Path(inbox_dir)
    rng = random.Random(seed)
    _shapes(inbox_dir / "shapes", rng, pairs)
    _shards(inbox_dir / "shards", rng, pairs // 2)
    _tables(inbox_dir / "tables", rng, pairs // 2)
    return {source: _files(inbox_dir / source) for source in IMAGE_TEXT_SOURCES}


def write_red_circle_video(
    path: Path, seed: int = 0, fps: float = 10, width: int = 160, height: int = 120
) -> Path:
    """12 seconds: a blue square (0–4 s), a red circle (4–8 s), a green triangle (8–12 s)."""
    stretches = [
        Stretch(RED_CIRCLE_SECONDS[0], "blue", "square"),
        Stretch(RED_CIRCLE_SECONDS[1] - RED_CIRCLE_SECONDS[0], "red", "circle"),
        Stretch(4.0, "green", "triangle"),
    ]
    return write_stretches(path, stretches, fps, width, height, seed, background="plain")


def build_video_sample(inbox_dir: Path, seed: int = 5) -> dict[str, int]:
    """Write the video sample under ``inbox_dir`` (``inbox/video``); returns files per source."""
    folder = Path(inbox_dir) / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    write_red_circle_video(folder / RED_CIRCLE_VIDEO, seed)
    write_stretches(
        folder / "crosses.avi",
        [Stretch(3, "yellow", "cross", 2), Stretch(5, "purple", "circle"), Stretch(2)],
        fps=8,
        seed=seed + 1,
    )
    write_stretches(
        folder / "orange.mkv",
        [Stretch(2), Stretch(4, "orange", "triangle"), Stretch(4, "blue", "cross")],
        seed=seed + 2,
    )
    write_stretches(
        folder / "squares.webm",
        [Stretch(5, "yellow", "square"), Stretch(5, "red", "square", 3)],
        seed=seed + 3,
    )
    write_stretches(folder / "unasked.mp4", [Stretch(3, "green", "circle")], seed=seed + 4)
    whole = write_stretches(
        folder / "corrupt_source.mp4", [Stretch(4, "red", "circle")], seed=seed + 5
    ).read_bytes()
    (folder / "corrupt.mp4").write_bytes(whole[: len(whole) // 3])
    (folder / "corrupt_source.mp4").unlink()
    questions = [
        {
            "id": "q-red",
            "video": RED_CIRCLE_VIDEO,
            "question": "a red circle",
            "answer": "from 4 to 8 seconds",
        },
        {"id": "q-blue", "video": RED_CIRCLE_VIDEO, "question": "a blue square"},
        {"id": "q-green", "video": RED_CIRCLE_VIDEO, "question": "a green triangle", "answer": "at the end"},
        {"id": "q-cross", "video": "crosses.avi", "question": "two yellow crosses"},
        {"id": "q-purple", "video": "crosses.avi", "question": "a purple circle"},
        {"id": "q-orange", "video": "orange.mkv", "question": "an orange triangle"},
        {"id": "q-squares", "video": "squares.webm", "question": "three red squares"},
        {"id": "q-corrupt", "video": "corrupt.mp4", "question": "a red circle"},
        {"id": "q-missing", "video": "not_there.mp4", "question": "a blue circle"},
        {"id": "q-empty", "video": RED_CIRCLE_VIDEO, "question": ""},
    ]
    (folder / "questions.jsonl").write_bytes(_jsonl(questions))
    return {"clips": _files(folder)}
