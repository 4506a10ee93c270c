"""Stored pixel values to display grey levels, in the order PS3.3 C.11 and PS3.14 define.

:func:`to_display_levels` states the order; every other function is one step, the
identity when its module is absent from the dataset:

1. :func:`color_to_luma` - RGB (YBR already converted by pydicom) to one grey channel.
2. :func:`modality_lut` - Modality LUT Sequence or Rescale Slope/Intercept
   (PS3.3 C.11.1): stored values to modality values, which must all be finite
   (``blank_image`` otherwise, :mod:`ingest.blank`).
3. :func:`voi` - VOI LUT Sequence, preferred over Window Center/Width (PS3.3 C.11.2,
   C.8.11.3.1.5), else a robust percentile window; the output is scaled to [0, 1] by the
   range that path produces, so later steps need not know which path ran.
4. :func:`presentation` - MONOCHROME1 or Presentation LUT Shape INVERSE, inverted once,
   after VOI, against that post-VOI range (PS3.3 C.7.6.3.1.2, C.8.11.1.1.1, C.11.6).
5. :func:`display_levels` - [0, 1] to float32 0..255 display grey levels.

pydicom's ``apply_modality_lut`` handles Modality LUT Sequences. Rescale, windowing and
VOI LUT lookup are written here with the same formulas (the tests compare them with
pydicom's) because pydicom's versions work in float64 through boolean masks (about 150 ms
for a 2,500 x 2,000 image against a 150 ms budget for the whole read) and its
``apply_voi`` indexes 8-bit-entry LUTs through a uint8 array, wrapping inputs above 255.
pydicom's ``apply_presentation_lut`` inverts against the image maximum, not the output
range, so the inversion is ours as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from ingest.blank import check_modality_values
from ingest.image import Normalization

#: Percentiles of the fallback window used when the dataset has no VOI module.
PERCENTILE_WINDOW = (0.5, 99.5)
#: The percentile window is computed on about this many pixels (a regular subsample).
PERCENTILE_SAMPLE_PIXELS = 1_000_000
#: ITU-R BT.601 luma weights, the same as Pillow's ``convert("L")``.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
_COLOR_PHOTOMETRICS = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})
_GREY_PHOTOMETRICS = frozenset({"MONOCHROME1", "MONOCHROME2"})
_VOI_LUT_BITS = frozenset({8, *range(10, 17)})  # PS3.3 C.8.11.3.1.5


class VoiPath(StrEnum):
    """Which VOI transform produced the display range (recorded in Normalization)."""

    VOI_LUT_SEQUENCE = "voi_lut_sequence"
    WINDOW = "window"
    PERCENTILE = "percentile"
    STORED_RANGE = "stored_range"  # 8-bit (or colour) stored values are display values


@dataclass(frozen=True)
class VoiChoice:
    """The VOI path for a dataset and why the preferred ones were passed over."""

    path: VoiPath
    notes: tuple[str, ...] = ()


def photometric_interpretation(ds: Dataset) -> str:
    """(0028,0004) Photometric Interpretation, upper-case, MONOCHROME2 when absent."""
    return str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()


def is_supported_photometric(value: str) -> bool:
    """True for grey and RGB/YBR photometric interpretations; PALETTE COLOR etc. are not."""
    return value in _GREY_PHOTOMETRICS or value in _COLOR_PHOTOMETRICS


def to_display_levels(frame: np.ndarray, ds: Dataset) -> tuple[np.ndarray, Normalization]:
    """Apply steps 1-5 to one decoded frame; return 2-D float32 0..255 and the record."""
    return _apply_steps(frame, ds, frame)


def display_table(frame: np.ndarray, ds: Dataset) -> tuple[np.ndarray, Normalization] | None:
    """Steps 2-5 applied once to every value of a grey integer frame's dtype (<= 16 bits).

    ``table[frame.astype(int) - iinfo(frame.dtype).min]`` equals
    ``to_display_levels(frame, ds)[0]`` pixel for pixel, because every step is a function
    of the pixel's own value except the percentile window's bounds, which are measured on
    ``frame`` exactly as :func:`to_display_levels` measures them. Looking a large frame up
    in the table (:func:`lookup`, about 9 ms for 5 Mpx) costs no more than the float32
    pipeline over it (9-23 ms: LUT Sequences cost the most). None where no table applies:
    colour or float data, more than 16 bits, or a modality step whose output over the
    whole dtype is not finite (the frame's own values may still be).
    """
    if frame.ndim != 2 or frame.dtype.kind not in "ui" or frame.dtype.itemsize > 2:
        return None
    info = np.iinfo(frame.dtype)
    values = np.arange(info.min, info.max + 1, dtype=np.int64).astype(frame.dtype)
    modality = modality_lut(values, ds)
    if modality.dtype.kind in "fc" and not np.isfinite(modality).all():
        return None
    return _apply_steps(values, ds, frame)


def lookup(table: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """``frame``'s display levels from :func:`display_table`'s ``table`` (same dtype)."""
    if frame.dtype.kind == "i":  # two's complement: value - min is the bits with the top flipped
        unsigned = np.dtype(f"u{frame.dtype.itemsize}")
        top = unsigned.type(1 << (8 * frame.dtype.itemsize - 1))
        return np.take(table, frame.view(unsigned) ^ top)
    return np.take(table, frame)


def _apply_steps(
    arr: np.ndarray, ds: Dataset, measured: np.ndarray
) -> tuple[np.ndarray, Normalization]:
    """Steps 1-5 on ``arr``; a percentile window is measured on ``measured`` (the frame)."""
    frame = arr
    steps: list[str] = []
    if frame.ndim == 3:
        arr = color_to_luma(frame, ds)
        steps.append(f"color:{photometric_interpretation(ds).lower()}_to_luma")
    modality_kind = modality_lut_kind(ds)
    arr = modality_lut(arr, ds)
    check_modality_values(arr)  # before VOI: a window would clip +inf to white
    if modality_kind:
        steps.append(f"modality_lut:{modality_kind}")
    choice = choose_voi(ds, is_color_frame=frame.ndim == 3)
    bounds = None
    if choice.path is VoiPath.PERCENTILE and measured is not frame:
        bounds = percentile_bounds(modality_lut(percentile_sample(measured), ds))
    unit, voi_step = voi(arr, ds, choice.path, bounds)
    steps.append(f"voi:{voi_step}")
    inverted = is_inverted(ds)
    unit = presentation(unit, ds)
    if inverted:
        steps.append(f"presentation:{presentation_reason(ds)}_inverted")
    pixels = display_levels(unit)
    steps.append("scale:0-255")
    bits_stored = int(ds.get("BitsStored") or frame.dtype.itemsize * 8)
    record = Normalization(
        steps=tuple(steps),
        bits_stored=bits_stored,
        source_dtype=str(frame.dtype),
        voi_path=str(choice.path),
        inverted=inverted,
        notes=choice.notes,
    )
    return pixels, record


def color_to_luma(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Step 1: ``(rows, cols, 3)`` RGB to ``(rows, cols)`` float32 luma (BT.601).

    pydicom has already converted YBR_FULL and YBR_FULL_422 to RGB; grey input is
    returned unchanged.
    """
    if arr.ndim != 3:
        return arr
    weights = np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    return np.asarray(arr[..., :3].astype(np.float32) @ weights, dtype=np.float32)


def modality_lut_kind(ds: Dataset) -> str | None:
    """ "sequence", "rescale" or None: which Modality LUT module (PS3.3 C.11.1) applies."""
    if ds.get("ModalityLUTSequence"):
        return "sequence"
    slope, intercept = _rescale(ds)
    if slope is not None and intercept is not None and (slope, intercept) != (1.0, 0.0):
        return "rescale"
    return None


def modality_lut(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Step 2: stored values to modality output values (PS3.3 C.11.1).

    A Modality LUT Sequence is applied by pydicom (integer output); Rescale Slope and
    Intercept give float32 ``arr * slope + intercept``; otherwise ``arr`` is returned as is.
    """
    kind = modality_lut_kind(ds)
    if kind == "sequence":
        return np.asarray(apply_modality_lut(arr, ds))
    if kind == "rescale":
        slope, intercept = _rescale(ds)
        assert slope is not None and intercept is not None
        out = arr.astype(np.float32)
        out *= np.float32(slope)
        out += np.float32(intercept)
        return out
    return arr


def choose_voi(ds: Dataset, *, is_color_frame: bool = False) -> VoiChoice:
    """Pick the VOI path: VOI LUT Sequence, else a valid window, else stored range/percentile.

    A module that is present but unusable (an unknown VOI LUT Function, a width below 1 for
    LINEAR, an unsupported LUT entry size) is passed over with a note, as a viewer would
    auto-window rather than show nothing.
    """
    notes: list[str] = []
    if is_color_frame:
        return VoiChoice(VoiPath.STORED_RANGE, ("voi not applied to colour data",))
    if ds.get("VOILUTSequence"):
        problem = _voi_lut_problem(ds)
        if problem is None:
            return VoiChoice(VoiPath.VOI_LUT_SEQUENCE)
        notes.append(f"VOI LUT Sequence ignored: {problem}")
    if "WindowCenter" in ds or "WindowWidth" in ds:
        problem = _window_problem(ds)
        if problem is None:
            return VoiChoice(VoiPath.WINDOW, tuple(notes))
        notes.append(f"window ignored: {problem}")
    bits = int(ds.get("BitsStored") or 16)
    if bits <= 8 and modality_lut_kind(ds) is None:
        return VoiChoice(VoiPath.STORED_RANGE, tuple(notes))
    return VoiChoice(VoiPath.PERCENTILE, tuple(notes))


def voi(
    arr: np.ndarray, ds: Dataset, path: VoiPath, bounds: tuple[float, float] | None = None
) -> tuple[np.ndarray, str]:
    """Step 3: modality values to float32 [0, 1] by ``path``; also a one-line description.

    ``bounds``: the percentile window's, when measured on other values than ``arr``.
    """
    if path is VoiPath.VOI_LUT_SEQUENCE:
        return voi_lut_sequence(arr, ds)
    if path is VoiPath.WINDOW:
        return window(arr, ds)
    if path is VoiPath.STORED_RANGE:
        return stored_range(arr, ds)
    return percentile_window(arr, bounds)


def voi_lut_sequence(arr: np.ndarray, ds: Dataset) -> tuple[np.ndarray, str]:
    """The first item of (0028,3010) VOI LUT Sequence, scaled by its entry range.

    PS3.3 C.11.2.1.1: inputs below the first mapped value take the first entry, inputs
    past the last entry take the last. Output 0..2^n-1 for n bits per entry, divided by
    2^n-1. Some writers declare 16 bits for a LUT whose entries never pass 12 bits; when
    the data needs 4 or more bits fewer than declared, the range the data needs is used
    (noted), so the image is not shown almost black.
    """
    item = ds.VOILUTSequence[0]
    entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536
    lut = _lut_data(item, ds, entries, bits)
    needed = max(int(lut.max()).bit_length(), 8)
    used_bits = needed if bits - needed >= 4 else bits
    index = np.rint(arr).astype(np.int64) if arr.dtype.kind == "f" else arr.astype(np.int64)
    index -= first_mapped
    np.clip(index, 0, entries - 1, out=index)
    scale = np.float32(1.0 / (2**used_bits - 1))
    table = lut.astype(np.float32) * scale
    out = np.minimum(table[index], np.float32(1.0))
    explanation = item.get("LUTExplanation")
    described = f"lut {entries} entries {bits}-bit"
    if used_bits != bits:
        described += f" (entries use {used_bits} bits)"
    if explanation:
        described += f" '{explanation}'"
    return out, described


def window(arr: np.ndarray, ds: Dataset) -> tuple[np.ndarray, str]:
    """The first (0028,1050) Window Center / (0028,1051) Window Width pair, onto [0, 1].

    PS3.3 C.11.2.1.2.1 LINEAR: ``((x - (c - 0.5)) / (w - 1) + 0.5)`` clipped;
    C.11.2.1.3.2 LINEAR_EXACT: ``(x - c) / w + 0.5`` clipped;
    C.11.2.1.3.1 SIGMOID: ``1 / (1 + exp(-4 (x - c) / w))``.
    Identical to pydicom's ``apply_windowing`` divided by its output range.
    """
    center, width = _first_value(ds, "WindowCenter"), _first_value(ds, "WindowWidth")
    function = _voi_lut_function(ds)
    x = arr.astype(np.float32, copy=True) if arr.dtype != np.float32 else arr.copy()
    if function == "SIGMOID":
        x -= np.float32(center)
        x *= np.float32(-4.0 / width)
        np.clip(x, -80.0, 80.0, out=x)  # exp(80) is finite in float32; the result is 0 or 1
        np.exp(x, out=x)
        x += np.float32(1.0)
        np.reciprocal(x, out=x)
        return x, f"window SIGMOID c={center:g} w={width:g}"
    if function == "LINEAR":
        offset, span = center - 0.5, width - 1.0
    else:
        offset, span = center, width
    x -= np.float32(offset)
    if span > 0:
        x *= np.float32(1.0 / span)
        x += np.float32(0.5)
    else:  # LINEAR with width 1: a threshold at the center
        x = (x > 0).astype(np.float32)
    np.clip(x, 0.0, 1.0, out=x)
    return x, f"window {function} c={center:g} w={width:g}"


def percentile_window(
    arr: np.ndarray, bounds: tuple[float, float] | None = None
) -> tuple[np.ndarray, str]:
    """Our fallback when no VOI module is present: the 0.5th-99.5th percentile window.

    Computed on a regular subsample of about :data:`PERCENTILE_SAMPLE_PIXELS` pixels;
    robust to collimator borders and burned-in markers, unlike min/max. ``bounds``, when
    given, were measured so on the frame whose values ``arr`` holds (a lookup table).
    """
    low, high = percentile_bounds(percentile_sample(arr)) if bounds is None else bounds
    x = arr.astype(np.float32, copy=True) if arr.dtype != np.float32 else arr.copy()
    x -= np.float32(low)
    x *= np.float32(1.0 / (high - low))
    np.clip(x, 0.0, 1.0, out=x)
    return x, f"percentile p{PERCENTILE_WINDOW[0]:g}-p{PERCENTILE_WINDOW[1]:g} [{low:g}, {high:g}]"


def percentile_sample(arr: np.ndarray) -> np.ndarray:
    """The regular subsample of about :data:`PERCENTILE_SAMPLE_PIXELS` a window is measured on."""
    step = max(1, int(np.sqrt(arr.size / PERCENTILE_SAMPLE_PIXELS)))
    return arr[::step, ::step] if arr.ndim == 2 else arr


def percentile_bounds(sample: np.ndarray) -> tuple[float, float]:
    """The :data:`PERCENTILE_WINDOW` of ``sample``, at least 1 wide."""
    low, high = (float(v) for v in np.percentile(sample, PERCENTILE_WINDOW))
    if high <= low:
        high = low + 1.0
    return low, high


def stored_range(arr: np.ndarray, ds: Dataset) -> tuple[np.ndarray, str]:
    """8-bit grey or colour data shown over its full stored range (what it was made for)."""
    bits = int(ds.get("BitsStored") or 8)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    low = -(2 ** (bits - 1)) if signed else 0
    x = arr.astype(np.float32, copy=True) if arr.dtype != np.float32 else arr.copy()
    x -= np.float32(low)
    x *= np.float32(1.0 / (2**bits - 1))
    np.clip(x, 0.0, 1.0, out=x)
    return x, f"stored range {bits}-bit"


def is_inverted(ds: Dataset) -> bool:
    """True when minimum values are shown white: MONOCHROME1 or Presentation LUT Shape INVERSE.

    PS3.3 C.8.11.1.1.1 (DX): INVERSE "shall be used if Photometric Interpretation is
    MONOCHROME1" - both describe the same single inversion, so they combine by OR, never
    by applying each in turn (the classic double-inversion bug).
    """
    return photometric_interpretation(ds) == "MONOCHROME1" or _presentation_shape(ds) == "INVERSE"


def presentation_reason(ds: Dataset) -> str:
    """Which attribute asked for the inversion, for the Normalization record."""
    if photometric_interpretation(ds) == "MONOCHROME1":
        return "monochrome1"
    return "presentation_lut_shape_inverse"


def presentation(unit: np.ndarray, ds: Dataset) -> np.ndarray:
    """Step 4: invert [0, 1] VOI output when :func:`is_inverted`; identity otherwise."""
    if not is_inverted(ds):
        return unit
    out = np.float32(1.0) - unit
    return np.asarray(out, dtype=np.float32)


def display_levels(unit: np.ndarray) -> np.ndarray:
    """Step 5: [0, 1] to float32 display grey levels 0..255 (0 = black)."""
    out = unit.astype(np.float32, copy=False) * np.float32(255.0)
    np.clip(out, 0.0, 255.0, out=out)
    return np.ascontiguousarray(out, dtype=np.float32)


def _rescale(ds: Dataset) -> tuple[float | None, float | None]:
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope in (None, "") or intercept in (None, ""):
        return None, None
    return float(slope), float(intercept)


def _presentation_shape(ds: Dataset) -> str:
    return str(ds.get("PresentationLUTShape", "") or "").strip().upper()


def _voi_lut_function(ds: Dataset) -> str:
    return str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()


def _first_value(ds: Dataset, keyword: str) -> float:
    element = ds[keyword]
    value: Any = element.value
    if element.VM > 1:
        value = value[0]
    return float(value)


def _window_problem(ds: Dataset) -> str | None:
    try:
        center, width = _first_value(ds, "WindowCenter"), _first_value(ds, "WindowWidth")
    except (KeyError, TypeError, ValueError, IndexError):
        return "(0028,1050) Window Center or (0028,1051) Window Width missing or not a number"
    if not (np.isfinite(center) and np.isfinite(width)):
        return "window values are not finite"
    function = _voi_lut_function(ds)
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        return f"(0028,1056) VOI LUT Function '{function}' is unknown"
    if function == "LINEAR" and width < 1:
        return f"(0028,1051) Window Width {width:g} is below 1 for LINEAR"
    if width <= 0:
        return f"(0028,1051) Window Width {width:g} is not positive"
    return None


def _voi_lut_problem(ds: Dataset) -> str | None:
    item = ds.VOILUTSequence[0]
    descriptor = item.get("LUTDescriptor")
    if descriptor is None or "LUTData" not in item:
        return "(0028,3002) LUT Descriptor or (0028,3006) LUT Data missing"
    try:
        entries, _first, bits = (int(v) for v in descriptor)
    except (TypeError, ValueError):
        return "(0028,3002) LUT Descriptor does not hold three numbers"
    if int(bits) not in _VOI_LUT_BITS:
        return f"{bits} bits per LUT entry is not allowed"
    try:
        _lut_data(item, ds, entries or 65536, bits)
    except ValueError as exc:
        return str(exc)
    return None


def _lut_data(item: Dataset, ds: Dataset, entries: int, bits: int) -> np.ndarray:
    value = item.LUTData
    if isinstance(value, bytes | bytearray):
        little = ds.original_encoding[1] is not False
        if len(value) == entries and bits == 8:
            data = np.frombuffer(value, dtype=np.uint8)
        else:
            data = np.frombuffer(value[: entries * 2], dtype="<u2" if little else ">u2")
    else:
        values = [value] if isinstance(value, int | float) else list(value)  # US: MultiValue
        data = np.asarray(values, dtype=np.int64)
    if data.size < entries:
        raise ValueError(f"(0028,3006) LUT Data has {data.size} entries, descriptor says {entries}")
    return np.asarray(data[:entries], dtype=np.int64)
