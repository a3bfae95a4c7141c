"""A small line chart as a PNG ``data:`` URI, drawn with numpy and zlib.

For metadata plots that every run of a stage draws (the fuzzy stage's LSH S-curve): importing
matplotlib and rendering a figure costs about 0.7 s of CPU per process, more than the rest of the
stage's metadata together, for a curve that needs no text on it. Axis names, the title and the
numbers go in the markdown beside the image instead.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

_MARGIN = 12
_GRID = 235  # light grey
_AXIS = 90
_CURVE = (31, 119, 180)  # matplotlib's first colour, as the other plots use


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(pixels: np.ndarray) -> bytes:
    """(height, width, 3) uint8 RGB as PNG bytes (8-bit, no interlace, filter 0 on every row)."""
    height, width, _ = pixels.shape
    rows = np.concatenate([np.zeros((height, 1), dtype=np.uint8), pixels.reshape(height, -1)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
        + _chunk(b"IEND", b"")
    )


def line_chart_uri(
    x: np.ndarray, y: np.ndarray, marker_x: float | None = None, width: int = 352, height: int = 240
) -> str:
    """y against x, both in [0, 1], on a light 0.2-step grid, with an optional dashed vertical line
    at ``marker_x``; a ``data:image/png;base64,`` URI."""
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    w, h = width - 2 * _MARGIN, height - 2 * _MARGIN

    def col(v):
        return _MARGIN + np.round(np.clip(v, 0, 1) * (w - 1)).astype(int)

    def row(v):
        return _MARGIN + np.round((1 - np.clip(v, 0, 1)) * (h - 1)).astype(int)

    for tick in np.linspace(0, 1, 6):
        img[row(tick), _MARGIN : _MARGIN + w] = _GRID
        img[_MARGIN : _MARGIN + h, col(tick)] = _GRID
    img[row(0.0), _MARGIN : _MARGIN + w] = _AXIS
    img[_MARGIN : _MARGIN + h, col(0.0)] = _AXIS
    if marker_x is not None:
        dashes = np.arange(_MARGIN, _MARGIN + h)
        img[dashes[(dashes // 4) % 2 == 0], col(marker_x)] = 128
    xs = np.linspace(0, 1, 4 * w)
    ys = np.interp(xs, x, y)
    cx, cy = col(xs), row(ys)
    for dx in (0, 1):  # 2 pixels wide, rows between neighbours filled so steep parts stay joined
        img[cy, np.minimum(cx + dx, width - 1)] = _CURVE
        lo, hi = np.minimum(cy[:-1], cy[1:]), np.maximum(cy[:-1], cy[1:])
        for i in np.flatnonzero(hi - lo > 1):
            img[lo[i] : hi[i] + 1, min(cx[i] + dx, width - 1)] = _CURVE
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode()
