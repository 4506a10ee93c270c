"""The triage result as a DICOM Secondary Capture: the heatmap overlay with the result burned in.

Many PACS viewers show images only, so the result is drawn into the pixels: a black band
under the radiograph (nothing of the anatomy is covered) carrying the priority, the label,
the probability and threshold, the model version and "NOT FOR DIAGNOSTIC USE". The image is
RGB, 8 bits, compressed as JPEG baseline (process 1, quality 95, stored YBR_FULL_422 with Lossy
Image Compression 01): the transfer syntax every PACS and viewer decodes, and a tenth of the
uncompressed size; the SC is a picture for reading-room context, never an image to measure
on. Burned In Annotation is YES. The overlay it is given must carry no caption of its own:
the result is in the band, outside the anatomy. The SC gets the source's
patient and study (highdicom ``SCImage.from_ref_dataset``), a series of its own and a Source
Image Sequence pointing at the radiograph it was derived from.
"""

from __future__ import annotations

import numpy as np
from highdicom.sc import SCImage
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import JPEGBaseline8Bit

from model.prediction import Label, Prediction, Priority
from pacs.identity import (
    MANUFACTURER,
    NOT_FOR_DIAGNOSTIC_USE,
    OUTSIDE_TRAINING_POPULATION_CAVEAT,
    SC_SERIES_DESCRIPTION,
    SC_SERIES_NUMBER,
    ResultUIDs,
    outside_training_population,
)
from pacs.source import copy_optional_patient_study, instance_number

MIN_WIDTH = 768  # narrower overlays are enlarged so the burned-in text stays legible
MAX_SIDE = 2048
PRIORITY_COLOURS = {
    Priority.URGENT: (255, 64, 64),
    Priority.SUSPECT: (255, 176, 0),
    Priority.ROUTINE: (255, 255, 255),
}
VALID_ORIENTATION = frozenset("APRLHF")
#: The lines after the first (whose colour is the priority's): figures, intended use, and
#: the population caveat when there is one.
LINE_COLOURS = ((255, 255, 255), (255, 255, 0), (255, 140, 0))


def result_lines(prediction: Prediction) -> tuple[str, ...]:
    """The burned-in lines, in the words a reader sees first: three, and a fourth with the
    population caveat when the row is flagged ``outside_training_population``."""
    finding = (
        "PNEUMONIA suspected" if prediction.label is Label.PNEUMONIA else "no pneumonia flagged"
    )
    lines: tuple[str, ...] = (
        f"AI triage: {prediction.priority.value.upper()} - {finding}",
        f"probability {prediction.probability:.2f} (threshold {prediction.threshold:.2f}) - "
        f"model {prediction.model_version}",
        f"{NOT_FOR_DIAGNOSTIC_USE} - research/triage aid, every case is still read",
    )
    if outside_training_population(prediction):
        lines += (OUTSIDE_TRAINING_POPULATION_CAVEAT,)
    return lines


def burn_in(overlay: Image.Image, prediction: Prediction) -> Image.Image:
    """``overlay`` (RGB) with a text band below it; the overlay's own pixels are unchanged
    unless it had to be resized to between :data:`MIN_WIDTH` and :data:`MAX_SIDE`."""
    image = overlay.convert("RGB")
    scale = max(MIN_WIDTH / image.width, 1.0) if image.width < MIN_WIDTH else 1.0
    scale = min(scale, MAX_SIDE / max(image.size))
    if scale != 1.0:
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.Resampling.BILINEAR)
    lines = result_lines(prediction)
    font = _font_fitting(lines, image.width)
    line_height = round(font.size * 1.4)
    band = line_height * len(lines) + line_height // 2
    canvas = Image.new("RGB", (image.width, image.height + band), (0, 0, 0))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    colours = (PRIORITY_COLOURS[prediction.priority], *LINE_COLOURS)[: len(lines)]
    for index, (line, colour) in enumerate(zip(lines, colours, strict=True)):
        y = image.height + line_height // 4 + index * line_height
        draw.text((font.size // 2, y), line, fill=colour, font=font)
    return canvas


def build_capture(
    source: Dataset, overlay: Image.Image, prediction: Prediction, uids: ResultUIDs
) -> SCImage:
    """The SC for ``prediction``: ``overlay`` (the radiograph with its Grad-CAM heatmap, any
    size) with the result burned in. ``source`` comes from :func:`pacs.source.read_source`."""
    pixels = np.asarray(burn_in(overlay, prediction), dtype=np.uint8)
    capture = SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation="YBR_FULL_422",  # the pixels are RGB; JPEG stores YCbCr
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=uids.sc_series,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=uids.sc_instance,
        instance_number=instance_number(source),
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),  # replaced below by the source's own value
        series_description=SC_SERIES_DESCRIPTION,
        manufacturer_model_name=MANUFACTURER,
        software_versions=prediction.model_version[:64],
        transfer_syntax_uid=JPEGBaseline8Bit,
    )
    # (0020,0020) Patient Orientation: the overlay keeps the source's orientation; where the
    # source does not state one, the SC leaves it empty (Type 2C) rather than guess.
    orientation = _orientation(source)
    capture.PatientOrientation = list(orientation) if orientation else []
    # (0018,0015) Body Part Examined, and Laterality where the source has one: eligibility
    # only scores chest radiographs, so an empty source value means CHEST.
    capture.BodyPartExamined = str(source.get("BodyPartExamined") or "CHEST")
    if source.get("Laterality"):
        capture.Laterality = source.Laterality
    # PS3.3 C.7.6.1.1.5: a lossy-compressed image says so, with the ratio and the method.
    capture.LossyImageCompression = "01"
    capture.LossyImageCompressionRatio = f"{pixels.size / max(len(capture.PixelData), 1):.2f}"
    capture.LossyImageCompressionMethod = "ISO_10918_1"
    capture.BurnedInAnnotation = "YES"
    capture.RecognizableVisualFeatures = "NO"
    capture.ImageComments = " ".join(result_lines(prediction))[:10240]
    capture.DerivationDescription = (
        f"Grad-CAM heatmap and triage result of {MANUFACTURER} {prediction.model_version} "
        f"over the source radiograph; {NOT_FOR_DIAGNOSTIC_USE}"
    )[:1024]
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    capture.SourceImageSequence = [reference]
    copy_optional_patient_study(source, capture)
    return capture


def _font_fitting(lines: tuple[str, ...], width: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled font, as large as lets the longest line fit ``width``."""
    size = max(12, width // 40)
    while True:
        font = ImageFont.load_default(size=size)
        if not isinstance(font, ImageFont.FreeTypeFont):
            raise RuntimeError("Pillow was built without FreeType: cannot burn in the result")
        widest = max(font.getlength(line) for line in lines)
        if widest <= width - size or size <= 8:
            return font
        size -= 1


def _orientation(source: Dataset) -> tuple[str, str] | None:
    """(0020,0020) Patient Orientation of the source when it is a valid biped pair."""
    value = source.get("PatientOrientation")
    if not value or len(value) != 2:
        return None
    row, column = str(value[0]), str(value[1])
    if not (set(row) <= VALID_ORIENTATION and set(column) <= VALID_ORIENTATION and row and column):
        return None
    return row, column
