"""JPEG and PNG (8 or 16 bit, grey or colour) to display grey levels, with Pillow.

A raster has no VOI, no photometric module and no header to trust: its stored values
*are* display levels. What this reader assumes is recorded in the returned
:class:`Normalization` (``voi_path`` "none (8-bit raster)", the EXIF transpose, a colour
conversion), never hidden. The pixel count is checked from the header Pillow reads on
``open`` before any pixel is decoded, against our bound rather than Pillow's global
``Image.MAX_IMAGE_PIXELS``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ingest.errors import IngestError, Reason
from ingest.image import Normalization
from ingest.limits import MAX_PIXELS, check_pixel_count

RASTER_VOI_PATH = "none (8-bit raster)"
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I"})
_EXIF_ORIENTATION_TAG = 0x0112


def read_raster_pixels(
    path: Path, max_pixels: int = MAX_PIXELS
) -> tuple[np.ndarray, Normalization]:
    """Decode ``path`` to 2-D float32 0..255 display levels and the record of how."""
    try:
        with Image.open(path) as image:
            check_pixel_count(image.height, image.width, len(image.getbands()), 1, max_pixels)
            image.load()
            return _to_grey(image)
    except IngestError:
        raise
    except Image.DecompressionBombError as exc:
        raise IngestError(Reason.TOO_LARGE, f"Pillow refused the image: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise IngestError(Reason.CORRUPT, "The image header cannot be identified.") from exc
    except (OSError, SyntaxError, ValueError, zlib.error) as exc:
        reason = Reason.TRUNCATED if "truncated" in str(exc).lower() else Reason.CORRUPT
        raise IngestError(reason, f"The image cannot be decoded ({type(exc).__name__}).") from exc
    except MemoryError as exc:
        raise IngestError(Reason.TOO_LARGE, "The decoded image does not fit in memory.") from exc


def _to_grey(image: Image.Image) -> tuple[np.ndarray, Normalization]:
    steps: list[str] = []
    orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    if orientation not in (None, 1):
        image = ImageOps.exif_transpose(image)
        steps.append(f"exif_transpose:orientation_{orientation}")
    source_mode = image.mode
    if source_mode in _SIXTEEN_BIT_MODES:
        stored = np.asarray(image, dtype=np.float32)
        bits = 16
        pixels = stored * np.float32(255.0 / 65535.0)
        steps.append("scale:16-bit_to_0-255")
    elif source_mode == "F":
        raise IngestError(
            Reason.UNSUPPORTED_PHOTOMETRIC, "Floating-point raster images are not supported."
        )
    else:
        bits = 8
        if source_mode != "L":
            image = _flatten(image)
            steps.append(f"color:{source_mode.lower()}_to_luma")
        pixels = np.asarray(image, dtype=np.float32)
    np.clip(pixels, 0.0, 255.0, out=pixels)
    record = Normalization(
        steps=(*steps, "voi:none", "scale:0-255"),
        bits_stored=bits,
        source_dtype=f"{source_mode}",
        voi_path=RASTER_VOI_PATH,
    )
    return np.ascontiguousarray(pixels, dtype=np.float32), record


def _flatten(image: Image.Image) -> Image.Image:
    """Colour, palette or alpha to one luma channel (BT.601), alpha composited on black."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("L")
