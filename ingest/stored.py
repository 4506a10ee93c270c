"""A film as stored, for a viewer that windows it itself (the review page's window/level).

:func:`ingest.read_image` gives display grey levels: the header's VOI already applied, the
tails outside its window clipped. A reader who widens the window must see those tails, so
the viewer gets the stored values instead (up to 16 bits, exact) with:

- ``display``: the display level (0..255) of every stored value, the same steps in the same
  order as :func:`ingest.read_image` (modality LUT, VOI, inversion: ``ingest.greylevels``),
  so "as sent" is exactly what the model was given;
- ``windows``: linear windows in stored-value units: each of the header's Window
  Center/Width pairs (mapped through the modality LUT), an automatic 0.5-99.5 percentile
  window and the full range, with ``inverted`` saying the viewer must invert after the
  window (MONOCHROME1 / Presentation LUT Shape INVERSE, once, after VOI);
- ``slope``/``intercept``: stored value to modality value, where that is a straight line,
  so the window the reader sets can be stated in the header's units.

What has no such table (colour, float or wider than 16 bits, a modality step that is not
finite) and JPEG/PNG files fall back to the display levels themselves at 16-bit precision
(``units`` says which). Every check and decode is ingest's own, so a hostile file fails
here exactly as it fails :func:`ingest.read_image`: with an :class:`IngestError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ingest.dicom import LIBRARY_ERRORS, decode_frame
from ingest.errors import IngestError, Reason
from ingest.greylevels import (
    display_table,
    is_inverted,
    modality_lut,
    percentile_bounds,
    percentile_sample,
)
from ingest.image import SourceKind
from ingest.readers import decode, dicom_dataset, read_header
from ingest.sniff import sniff

#: Display levels scaled to 16 bits (x 257 maps 0..255 onto 0..65535 exactly).
DISPLAY_SCALE = 257


@dataclass(frozen=True)
class Window:
    """A linear window over stored values: ``low`` shows black, ``high`` white (before any
    inversion)."""

    name: str
    low: float
    high: float


@dataclass(frozen=True)
class StoredFilm:
    values: np.ndarray  # 2-D uint16: the stored value minus the dtype's minimum
    display: np.ndarray  # uint8, one display level per possible value ("as sent")
    windows: tuple[Window, ...]
    inverted: bool  # invert after a linear window (MONOCHROME1 / INVERSE)
    units: str  # "stored" (DICOM stored values) or "display" (display levels x 257)
    slope: float | None  # modality value = slope * value + intercept, where linear
    intercept: float | None
    voi: str  # how "as sent" was made (ingest's normalization record)

    @property
    def height(self) -> int:
        return int(self.values.shape[0])

    @property
    def width(self) -> int:
        return int(self.values.shape[1])


def read_stored(path: Path) -> StoredFilm:
    """The film of ``path`` for windowing; raises :class:`IngestError` as ``read_image``."""
    metadata = read_header(path)
    if metadata.kind is SourceKind.DICOM:
        sniffed = sniff(path)
        ds = dicom_dataset(path, sniffed, metadata)
        frame = decode_frame(ds)
        try:
            film = _from_stored(frame, ds)
        except LIBRARY_ERRORS as exc:
            raise IngestError(
                Reason.CORRUPT,
                f"The grey-level modules cannot be applied ({type(exc).__name__}: {exc}).",
            ) from exc
        if film is not None:
            return film
    image = decode(path, metadata)
    return _from_display(image.pixels, ", ".join(image.normalization.steps))


def _from_stored(frame: np.ndarray, ds: Dataset) -> StoredFilm | None:
    """A grey integer frame of up to 16 bits with its display table; None otherwise."""
    made = display_table(frame, ds) if frame.ndim == 2 else None
    if made is None:
        return None
    table, normalization = made
    info = np.iinfo(frame.dtype)
    if frame.dtype.kind == "i":  # value - min: the bits with the top one flipped
        unsigned = np.dtype(f"u{frame.dtype.itemsize}")
        top = unsigned.type(1 << (8 * frame.dtype.itemsize - 1))
        values = (frame.view(unsigned) ^ top).astype(np.uint16)
    else:
        values = frame.astype(np.uint16)
    display = np.clip(np.rint(table), 0, 255).astype(np.uint8)
    every = np.arange(info.min, info.max + 1, dtype=np.int64).astype(frame.dtype)
    modality = np.asarray(modality_lut(every, ds), dtype=np.float64)
    slope, intercept = _straight_line(modality)
    windows = [*_header_windows(ds, modality), *_data_windows(values)]
    return StoredFilm(
        values=np.ascontiguousarray(values),
        display=display,
        windows=tuple(windows),
        inverted=is_inverted(ds),
        units="stored",
        slope=slope,
        intercept=intercept,
        voi=", ".join(normalization.steps),
    )


def _from_display(pixels: np.ndarray, steps: str) -> StoredFilm:
    """Display levels (0..255 float) at 16-bit precision; windows over those levels."""
    values = np.rint(pixels * DISPLAY_SCALE).astype(np.uint16)
    display = np.rint(np.arange(65536) / DISPLAY_SCALE).clip(0, 255).astype(np.uint8)
    return StoredFilm(
        values=values,
        display=display,
        windows=tuple(_data_windows(values)),
        inverted=False,
        units="display",
        slope=1.0 / DISPLAY_SCALE,
        intercept=0.0,
        voi=steps,
    )


def _straight_line(modality: np.ndarray) -> tuple[float | None, float | None]:
    """(slope, intercept) when the modality step is linear in the value, else (None, None)."""
    if modality.size < 2 or not np.isfinite(modality).all():
        return None, None
    slope = float(modality[1] - modality[0])
    line = modality[0] + slope * np.arange(modality.size)
    if slope == 0 or not np.allclose(modality, line, rtol=1e-6, atol=1e-6 * abs(slope)):
        return None, None
    return slope, float(modality[0])


def _header_windows(ds: Dataset, modality: np.ndarray) -> list[Window]:
    """The header's Window Center/Width pairs (PS3.3 C.11.2.1.2), mapped from modality
    values back to stored values; none when the modality step is not monotonic."""
    centers, widths = _numbers(ds, "WindowCenter"), _numbers(ds, "WindowWidth")
    if not centers or not widths or not np.isfinite(modality).all():
        return []
    steps = np.diff(modality)
    if (steps >= 0).all():
        ordered, positions = modality, np.arange(modality.size, dtype=np.float64)
    elif (steps <= 0).all():
        ordered, positions = modality[::-1], np.arange(modality.size, dtype=np.float64)[::-1]
    else:
        return []
    explanations = _texts(ds, "WindowCenterWidthExplanation")
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    found: list[Window] = []
    for index, (center, width) in enumerate(zip(centers, widths, strict=False)):
        if not (np.isfinite(center) and np.isfinite(width)) or width < 1:
            continue
        if function == "LINEAR":
            low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
        else:  # LINEAR_EXACT; a SIGMOID's centre and width, drawn as a straight window
            low, high = center - width / 2, center + width / 2
        bounds = np.interp([low, high], ordered, positions)
        name = explanations[index] if index < len(explanations) else ""
        label = f"Header window {index + 1}" + (f" ({name})" if name else "")
        found.append(Window(label[:64], float(min(bounds)), float(max(bounds))))
    return found


def _data_windows(values: np.ndarray) -> list[Window]:
    low, high = percentile_bounds(percentile_sample(values).astype(np.float64))
    return [
        Window("Auto (0.5-99.5 percentile)", low, high),
        Window("Full range", float(values.min()), float(max(values.max(), values.min() + 1))),
    ]


def _numbers(ds: Dataset, keyword: str) -> list[float]:
    """A DS attribute's values (one or several), empty when absent or not numbers."""
    try:
        value = ds.get(keyword)
        if value is None:
            return []
        items = (
            [value] if isinstance(value, str | bytes) or not isinstance(value, Sequence) else value
        )
        return [float(item) for item in items]
    except (TypeError, ValueError, OverflowError):
        return []


def _texts(ds: Dataset, keyword: str) -> list[str]:
    try:
        value = ds.get(keyword)
    except (TypeError, ValueError, UnicodeError, LookupError):
        return []
    if value is None:
        return []
    items = [value] if isinstance(value, str | bytes) or not isinstance(value, Sequence) else value
    return ["".join(ch for ch in str(item) if ch.isprintable()).strip() for item in items]
