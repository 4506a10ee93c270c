"""Render a Grad-CAM heatmap over the radiograph, as a reviewer would want to see it."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from model.prediction import Prediction

#: Per heat level (0..255): the jet colour (0..255) and how much of it shows (0 below 0.2, so
#: weak evidence leaves the anatomy readable, rising to 1 at full heat). Looked up per pixel:
#: a table of 256 entries instead of evaluating the colour map on every pixel.
_LEVELS = np.arange(256, dtype=np.float32) / 255
_JET = (colormaps["jet"](_LEVELS)[:, :3] * 255).astype(np.float32)
_OPACITY = np.clip((_LEVELS - 0.2) / 0.8, 0, 1).astype(np.float32)
#: The shorter side a radiograph needs for an overlay: a 5:4 image then still fills the
#: 1,024 px of ``max_side`` and the SC's 768 px minimum width without being enlarged. Read
#: with ``ingest.read_image(path, min_side=OVERLAY_MIN_SIDE)``: a 2,500 x 2,000 JPEG 2000
#: decodes at 1/2 per side in a tenth of its full decode (235 ms against 2.3 s, loaded).
OVERLAY_MIN_SIDE = 768


def overlay_heatmap(
    grey: np.ndarray,
    heatmap: np.ndarray,
    caption: str | None = None,
    alpha: float = 0.4,
    max_side: int = 1024,
) -> Image.Image:
    """RGB image: the display-level radiograph with the heatmap (jet) blended on top.

    ``grey`` is display grey levels (0..255), any size; the heatmap (values in [0, 1]) is
    stretched over the whole image, matching the squash of the model's preprocessing. Weak
    evidence (< 0.2) stays transparent so the anatomy underneath is readable.
    """
    base = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), mode="L")
    scale = min(1.0, max_side / max(base.size))
    if scale < 1.0:
        base = base.resize(
            (round(base.width * scale), round(base.height * scale)), Image.Resampling.BILINEAR
        )
    heat_image = Image.fromarray((np.clip(heatmap, 0, 1) * 255).astype(np.uint8), mode="L")
    levels = np.asarray(heat_image.resize(base.size, Image.Resampling.BILINEAR))
    colours, weight = _JET[levels], _OPACITY[levels][..., np.newaxis] * alpha
    rgb = np.asarray(base.convert("RGB"), dtype=np.float32)
    blended = Image.fromarray((rgb + weight * (colours - rgb)).astype(np.uint8))
    return with_caption(blended, caption) if caption else blended


def with_caption(overlay: Image.Image, caption: str) -> Image.Image:
    """A copy of ``overlay`` with ``caption`` in a black strip over its top (the review
    page's form; the SC takes the overlay without and burns its result in below)."""
    captioned = overlay.copy()
    draw = ImageDraw.Draw(captioned)
    draw.rectangle((0, 0, captioned.width, 22), fill=(0, 0, 0))
    draw.text((6, 5), caption, fill=(255, 255, 0))
    return captioned


def result_caption(prediction: Prediction) -> str:
    """The one-line result burned into every overlay a person sees (review page, CLI)."""
    return (
        f"{prediction.priority.value.upper()}  P(pneumonia)={prediction.probability:.3f} "
        f"{prediction.label.value}  {prediction.model_version} - not for diagnostic use"
    )
