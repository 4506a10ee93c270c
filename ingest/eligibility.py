"""What the model may score, decided from the header alone (BRIEF.md section 4).

Each rule is a named check ``(ImageMetadata) -> CheckFinding | None``; :data:`RULES` holds them
in the order their reasons are reported, and the tables below hold every accepted or
rejected value, so a site can read the policy in one screen. Being ineligible is an
outcome (stored with its reason), not an exception; :func:`ingest.loading.load_scorable`
turns it into one for callers that only want scorable images.

The model was trained on frontal (PA/AP) chest radiographs of children aged 1-5 from
8-bit JPEGs; inputs it never saw are rejected, inputs it may be right about but that are
outside its intended use are scored and flagged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ingest.errors import Reason
from ingest.image import ImageMetadata, SourceKind

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"

#: SOP classes a chest radiograph for display is stored as.
ACCEPTED_SOP_CLASSES: Mapping[str, str] = {
    CR_IMAGE_STORAGE: "Computed Radiography Image Storage",
    DX_FOR_PRESENTATION: "Digital X-Ray Image Storage - For Presentation",
}
#: SOP classes rejected with a reason more specific than ``wrong_sop_class``.
REJECTED_SOP_CLASSES: Mapping[str, Reason] = {DX_FOR_PROCESSING: Reason.DX_FOR_PROCESSING}
#: (0008,0060) Modality values of a projection radiograph.
ACCEPTED_MODALITIES = frozenset({"CR", "DX"})
#: (0008,0068) Presentation Intent Type that is raw detector data, not for display.
FOR_PROCESSING = "FOR PROCESSING"
#: (0018,0015) Body Part Examined: CHEST is the defined term; THORAX is written by some
#: vendors' protocols for the same thing. Empty is accepted and flagged.
ACCEPTED_BODY_PARTS = frozenset({"CHEST", "THORAX"})
#: (0018,5101) View Position (PS3.3 C.8.11.5 defined terms).
FRONTAL_VIEWS = frozenset({"PA", "AP"})
LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT"})
#: Patient ages of the training data, in years: [low, high). "5 years" is 5.0-5.99.
TRAINING_AGE_YEARS = (1.0, 6.0)
#: From this age the header says an adult: a population the model never saw and whose
#: films it cannot be shown to read (README, "Knowing when not to trust the score"); the
#: worker does not score them (``worker.population``). Children outside 1-5 are scored and
#: flagged.
ADULT_AGE_YEARS = 18.0
#: (0028,0004) values scored as they are, and those converted to grey (and flagged).
GREY_PHOTOMETRICS = frozenset({"MONOCHROME1", "MONOCHROME2"})
COLOR_PHOTOMETRICS = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})

# Flags: stable snake_case strings stored with the worklist row.
AGE_OUTSIDE_TRAINING_RANGE = "age_outside_training_range"
ADULT_BY_HEADER_AGE = "adult_by_header_age"
AGE_UNKNOWN = "age_unknown"
ELIGIBILITY_UNVERIFIED = "eligibility_unverified"
MISSING_VIEW_POSITION = "missing_view_position"
MISSING_BODY_PART = "missing_body_part"
COLOR_CONVERTED = "color_converted"


@dataclass(frozen=True)
class CheckFinding:
    """What one check found: a rejection (reason and a sentence) or a flag."""

    reason: Reason | None = None
    message: str = ""
    flag: str | None = None

    def __post_init__(self) -> None:
        if (self.reason is None) == (self.flag is None):
            raise ValueError("a CheckFinding is either a rejection or a flag")
        if self.reason is not None and not self.message:
            raise ValueError("a rejection needs a sentence for the PACS administrator")


@dataclass(frozen=True)
class Eligibility:
    """The verdict on one file: eligible iff no check rejected it.

    ``reasons`` and ``messages`` are parallel (the first is the one stored); ``flags`` are
    stable snake_case strings shown with the score.
    """

    eligible: bool
    reasons: tuple[Reason, ...] = ()
    flags: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.eligible == bool(self.reasons):
            raise ValueError("eligible must be True exactly when there is no reason")
        if len(self.messages) != len(self.reasons):
            raise ValueError("each reason needs its message")


Check = Callable[[ImageMetadata], CheckFinding | None]


def _reject(reason: Reason, message: str) -> CheckFinding:
    return CheckFinding(reason=reason, message=message)


def _flag(flag: str) -> CheckFinding:
    return CheckFinding(flag=flag)


def check_header_present(md: ImageMetadata) -> CheckFinding | None:
    """JPEG/PNG carry no header: nothing below can be verified."""
    return None if md.kind is SourceKind.DICOM else _flag(ELIGIBILITY_UNVERIFIED)


def check_sop_class(md: ImageMetadata) -> CheckFinding | None:
    """(0008,0016) SOP Class UID: CR or DX for presentation (Modality when the UID is absent)."""
    if md.kind is not SourceKind.DICOM:
        return None
    uid = md.sop_class_uid
    if uid is None:
        if md.modality is None:
            return _reject(
                Reason.WRONG_SOP_CLASS,
                "The dataset has neither (0008,0016) SOP Class UID nor (0008,0060) "
                "Modality; it cannot be a CR or DX image.",
            )
        return _flag(ELIGIBILITY_UNVERIFIED)  # check_modality decides on Modality alone
    if uid in ACCEPTED_SOP_CLASSES:
        return None
    reason = REJECTED_SOP_CLASSES.get(uid, Reason.WRONG_SOP_CLASS)
    return _reject(
        reason, f"(0008,0016) SOP Class UID '{uid}' is not a CR or DX image for presentation."
    )


def check_modality(md: ImageMetadata) -> CheckFinding | None:
    """(0008,0060) Modality: CR or DX; an absent value is left to the SOP class."""
    if md.kind is not SourceKind.DICOM or md.modality is None:
        return None
    if md.modality in ACCEPTED_MODALITIES:
        return None
    return _reject(
        Reason.WRONG_MODALITY,
        f"(0008,0060) Modality '{md.modality}' is not a radiograph (CR or DX).",
    )


def check_presentation_intent(md: ImageMetadata) -> CheckFinding | None:
    """(0008,0068) Presentation Intent Type FOR PROCESSING is raw detector data."""
    if md.presentation_intent_type == FOR_PROCESSING:
        return _reject(
            Reason.DX_FOR_PROCESSING,
            "(0008,0068) Presentation Intent Type is FOR PROCESSING (raw detector "
            "data, not meant for display).",
        )
    return None


def check_image_pixel_module(md: ImageMetadata) -> CheckFinding | None:
    """(0028,0010) Rows and (0028,0011) Columns: an image has them; a report does not."""
    if md.kind is SourceKind.DICOM and (md.rows is None or md.columns is None):
        return _reject(
            Reason.NO_PIXEL_DATA,
            "The dataset has no Image Pixel module ((0028,0010) Rows, (0028,0011) "
            "Columns); it holds no image.",
        )
    return None


def check_frames(md: ImageMetadata) -> CheckFinding | None:
    """(0028,0008) Number of Frames: one (see the frame rule in ingest.dicom)."""
    if md.number_of_frames is not None and md.number_of_frames > 1:
        return _reject(
            Reason.MULTI_FRAME,
            f"(0028,0008) Number of Frames is {md.number_of_frames}; a radiograph is one frame.",
        )
    return None


def check_photometric(md: ImageMetadata) -> CheckFinding | None:
    """(0028,0004) Photometric Interpretation: grey as is, RGB/YBR converted and flagged."""
    value = md.photometric_interpretation
    if md.kind is not SourceKind.DICOM or value is None or value in GREY_PHOTOMETRICS:
        return None
    if value in COLOR_PHOTOMETRICS:
        return _flag(COLOR_CONVERTED)
    return _reject(
        Reason.UNSUPPORTED_PHOTOMETRIC,
        f"(0028,0004) Photometric Interpretation '{value}' is not supported.",
    )


def check_body_part(md: ImageMetadata) -> CheckFinding | None:
    """(0018,0015) Body Part Examined: CHEST (or THORAX); empty is scored and flagged."""
    if md.kind is not SourceKind.DICOM:
        return None
    if md.body_part_examined is None:
        return _flag(MISSING_BODY_PART)
    if md.body_part_examined in ACCEPTED_BODY_PARTS:
        return None
    return _reject(
        Reason.NOT_CHEST, f"(0018,0015) Body Part Examined '{md.body_part_examined}' is not CHEST."
    )


def check_view_position(md: ImageMetadata) -> CheckFinding | None:
    """(0018,5101) View Position: PA or AP; laterals and other views are rejected."""
    if md.kind is not SourceKind.DICOM:
        return None
    view = md.view_position
    if view is None:
        return _flag(MISSING_VIEW_POSITION)
    if view in FRONTAL_VIEWS:
        return None
    if view in LATERAL_VIEWS:
        return _reject(
            Reason.LATERAL_VIEW,
            f"(0018,5101) View Position '{view}' is a lateral view; the model "
            "only saw frontal (PA/AP) views.",
        )
    return _reject(
        Reason.NON_FRONTAL_VIEW,
        f"(0018,5101) View Position '{view}' is not a frontal (PA/AP) view.",
    )


def check_patient_age(md: ImageMetadata) -> CheckFinding | None:
    """Patient age in the 1-5 year training range; outside or unknown is flagged."""
    if md.kind is not SourceKind.DICOM:
        return None
    if md.patient_age_years is None:
        return _flag(AGE_UNKNOWN)
    low, high = TRAINING_AGE_YEARS
    if not low <= md.patient_age_years < high:
        return _flag(AGE_OUTSIDE_TRAINING_RANGE)
    return None


def check_adult(md: ImageMetadata) -> CheckFinding | None:
    """An adult by the header's age (or birth date): flagged here, not scored by the worker
    once the pixels show a chest radiograph (an adult's film of something else is named
    for what it is, ``not_chest_radiograph``)."""
    if md.kind is not SourceKind.DICOM or md.patient_age_years is None:
        return None
    return _flag(ADULT_BY_HEADER_AGE) if md.patient_age_years >= ADULT_AGE_YEARS else None


#: The checks, in the order their reasons are reported.
RULES: tuple[Check, ...] = (
    check_header_present,
    check_sop_class,
    check_modality,
    check_presentation_intent,
    check_image_pixel_module,
    check_frames,
    check_photometric,
    check_body_part,
    check_view_position,
    check_patient_age,
    check_adult,
)


def evaluate(metadata: ImageMetadata, rules: tuple[Check, ...] = RULES) -> Eligibility:
    """Run every rule on ``metadata`` and return the verdict (never raises for bad input)."""
    findings = [finding for rule in rules if (finding := rule(metadata)) is not None]
    reasons = tuple(f.reason for f in findings if f.reason is not None)
    messages = tuple(f.message for f in findings if f.reason is not None)
    flags = tuple(dict.fromkeys(f.flag for f in findings if f.flag is not None))
    return Eligibility(eligible=not reasons, reasons=reasons, flags=flags, messages=messages)
