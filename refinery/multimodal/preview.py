"""Small images for the Dagster UI: contact sheets of scored pairs, strips of keyframes.

Dagster has no image metadata type, but Markdown metadata renders a PNG given as a base64 data
URI. Metadata is stored in the run database, so previews stay thumbnails: a few dozen
kilobytes, quantised to a palette.
"""

from __future__ import annotations

import base64
import heapq
import io
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PIL import Image

from refinery.metadata import Markdown
from refinery.multimodal.images import decode_rgb

if TYPE_CHECKING:
    from PIL import ImageDraw, ImageFont

MAX_PREVIEW_BYTES = 150_000


def _font() -> ImageFont.ImageFont:
    from PIL import ImageFont  # here: drawing modules load fonts, ~0.1 s at every `import definitions`

    return ImageFont.load_default()


def thumbnail(image: Image.Image, size: int) -> Image.Image:
    image = image.copy()
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return image


def png_bytes(image: Image.Image, colours: int = 128) -> bytes:
    """A palette PNG: thumbnails of photos and shapes look the same at a fraction of the size."""
    buffer = io.BytesIO()
    image.convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown that shows ``png`` inline in the Dagster UI."""
    if len(png) > MAX_PREVIEW_BYTES:
        return f"_{alt}: preview of {len(png):,} bytes left out (limit {MAX_PREVIEW_BYTES:,})_"
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def _label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, width_chars: int, lines: int) -> None:
    wrapped = textwrap.wrap(text, width_chars)[:lines]
    if len(textwrap.wrap(text, width_chars)) > lines and wrapped:
        wrapped[-1] = wrapped[-1][: max(0, width_chars - 1)] + "…"
    draw.multiline_text(xy, "\n".join(wrapped), fill=(20, 20, 20), font=_font(), spacing=1)


@dataclass(order=True)
class _Entry:
    key: float
    order: int
    score: float = field(compare=False)
    row_id: str = field(compare=False)
    caption: str = field(compare=False)
    image: bytes = field(compare=False)


class Extremes:
    """The ``n`` highest and ``n`` lowest scored pairs seen while streaming (bounded memory)."""

    def __init__(self, n: int = 6):
        self.n = n
        self._high: list[_Entry] = []  # min-heap on score: the smallest of the top n on top
        self._low: list[_Entry] = []  # min-heap on -score
        self._seen = 0

    def add(self, score: float, row_id: str, caption: str, image: bytes) -> None:
        if score != score:  # NaN: not scored
            return
        self._seen += 1
        for heap, key in ((self._high, score), (self._low, -score)):
            entry = _Entry(key, -self._seen, score, row_id, caption, image)
            if len(heap) < self.n:
                heapq.heappush(heap, entry)
            elif entry > heap[0]:
                heapq.heapreplace(heap, entry)

    def highest(self) -> list[_Entry]:
        return sorted(self._high, reverse=True)

    def lowest(self) -> list[_Entry]:
        return sorted(self._low, reverse=True)


def contact_sheet(rows: list[tuple[str, list]], thumb: int = 76, label_lines: int = 4) -> bytes:
    """A PNG with one titled row per group, each pair as a thumbnail with score and caption."""
    columns = max((len(entries) for _, entries in rows), default=0) or 1
    cell_w, cell_h, title_h = thumb + 12, thumb + 16 + 11 * label_lines, 14
    sheet = Image.new("RGB", (columns * cell_w + 8, len(rows) * (cell_h + title_h) + 4), (250, 250, 250))
    from PIL import ImageDraw

    draw = ImageDraw.Draw(sheet)
    y = 2
    for title, entries in rows:
        draw.text((4, y), title, fill=(0, 0, 0), font=_font())
        y += title_h
        for i, entry in enumerate(entries):
            x = 4 + i * cell_w
            try:
                image = thumbnail(decode_rgb(entry.image), thumb)
            except Exception:  # a preview never fails a stage
                image = Image.new("RGB", (thumb, thumb), (200, 0, 0))
            sheet.paste(image, (x + (thumb - image.width) // 2, y + (thumb - image.height) // 2))
            draw.text((x, y + thumb + 1), f"{entry.score:.3f}", fill=(0, 0, 120), font=_font())
            _label(draw, (x, y + thumb + 13), entry.caption, max(8, cell_w // 6), label_lines)
        y += cell_h
    return png_bytes(sheet)


def frame_strip(samples: list[tuple[str, list[tuple[Image.Image, str]]]], height: int = 64) -> bytes:
    """A PNG with one row per sample: its title, then its frames with a label under each."""
    rows = []
    for title, frames in samples:
        smalls = []
        for image, label in frames:
            small = image.copy()
            small.thumbnail((height * 4, height), Image.Resampling.LANCZOS)
            smalls.append((small, label))
        rows.append((title, smalls))
    width = max([sum(im.width + 4 for im, _ in smalls) for _, smalls in rows] + [240]) + 8
    row_h = height + 30
    strip = Image.new("RGB", (width, len(rows) * row_h + 4), (250, 250, 250))
    from PIL import ImageDraw

    draw = ImageDraw.Draw(strip)
    y = 2
    for title, smalls in rows:
        draw.text((4, y), title[: width // 6], fill=(0, 0, 0), font=_font())
        x = 4
        for small, label in smalls:
            strip.paste(small, (x, y + 13))
            draw.text((x, y + 14 + height), label, fill=(0, 0, 120), font=_font())
            x += small.width + 4
        y += row_h
    return png_bytes(strip)


def sheet_markdown(title_rows: list[tuple[str, list]], alt: str) -> Markdown:
    """A contact sheet of titled rows of pairs as Markdown, or a note when there are none."""
    if not any(entries for _, entries in title_rows):
        return Markdown("_no pairs_")
    return Markdown(markdown_image(contact_sheet(title_rows), alt))
