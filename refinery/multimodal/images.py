"""Reading image bytes: what is wrong with a file, if anything, and its size and format.

Images are decoded fully at ingest (``Image.load()``), because a truncated JPEG opens and reports
its size happily and only fails when its pixels are read; finding that later, inside a CLIP
batch, would cost a whole batch. PIL's decompression-bomb guard stays on: an image of more
pixels than ``max_pixels`` is refused before it is decoded.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageFile

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own limit (a 0.25 GB RGB image)


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    mode: str


def image_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=10).hexdigest()


def inspect_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[ImageInfo | None, tuple[str, str] | None]:
    """(info, None) for a readable image, else (None, (reason, detail)).

    Reasons: ``empty_file`` (0 bytes), ``unreadable_image`` (not an image PIL knows, or a broken
    one), ``truncated_image`` (the data ends before the pixels do), ``image_too_large``.
    """
    if not data:
        return None, ("empty_file", "0 bytes")
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone else's global: we must see truncation
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; truncated images would pass unseen")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > max_pixels:
                    return None, ("image_too_large", f"{image.width}×{image.height} pixels > {max_pixels}")
                info = ImageInfo(image.format or "unknown", image.width, image.height, image.mode)
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return None, ("image_too_large", str(err))
    except Image.UnidentifiedImageError:
        return None, ("unreadable_image", f"not an image format PIL can identify ({len(data)} bytes)")
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        message = str(err) or type(err).__name__
        if "truncat" in message.lower() or isinstance(err, EOFError):
            return None, ("truncated_image", message)
        return None, ("unreadable_image", message)
    return info, None


def decode_rgb(data: bytes) -> Image.Image:
    """The image as 8-bit RGB (palette, alpha, CMYK, 16-bit and grey images converted)."""
    with Image.open(io.BytesIO(data)) as image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            image = image.point(lambda v: v / 256).convert("L")  # 16-bit grey to 8-bit
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGB", rgba.size, (255, 255, 255))  # transparent areas on white
            background.paste(rgba, mask=rgba.getchannel("A"))
            return background
        return image.convert("RGB")
