"""BRIEF.md section 4, rule by rule: accept, reject with a reason, or score with a flag."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ingest import ImageMetadata, Reason, SourceKind, evaluate
from ingest.eligibility import (
    CR_IMAGE_STORAGE,
    DX_FOR_PRESENTATION,
    DX_FOR_PROCESSING,
    RULES,
    Eligibility,
)

CHEST_PA = ImageMetadata(
    kind=SourceKind.DICOM,
    file_sha256="0" * 64,
    source_name="a.dcm",
    sop_class_uid=CR_IMAGE_STORAGE,
    modality="CR",
    body_part_examined="CHEST",
    view_position="PA",
    patient_age_years=3.0,
    photometric_interpretation="MONOCHROME2",
    rows=2000,
    columns=2500,
)


def test_cr_chest_pa_in_age_range_is_eligible_without_flags() -> None:
    assert evaluate(CHEST_PA) == Eligibility(eligible=True)


def test_dx_for_presentation_ap_is_eligible() -> None:
    md = replace(
        CHEST_PA,
        sop_class_uid=DX_FOR_PRESENTATION,
        modality="DX",
        view_position="AP",
        presentation_intent_type="FOR PRESENTATION",
    )
    assert evaluate(md).eligible


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"sop_class_uid": DX_FOR_PROCESSING, "modality": "DX"}, Reason.DX_FOR_PROCESSING),
        (
            {
                "sop_class_uid": DX_FOR_PRESENTATION,
                "modality": "DX",
                "presentation_intent_type": "FOR PROCESSING",
            },
            Reason.DX_FOR_PROCESSING,
        ),
        ({"sop_class_uid": "1.2.840.10008.5.1.4.1.1.7", "modality": "OT"}, Reason.WRONG_SOP_CLASS),
        (
            {"sop_class_uid": "1.2.840.10008.5.1.4.1.1.88.67", "modality": "SR"},
            Reason.WRONG_SOP_CLASS,
        ),
        ({"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "modality": "CT"}, Reason.WRONG_SOP_CLASS),
        ({"sop_class_uid": None, "modality": "MR"}, Reason.WRONG_MODALITY),
        ({"sop_class_uid": None, "modality": None}, Reason.WRONG_SOP_CLASS),
        ({"body_part_examined": "HAND"}, Reason.NOT_CHEST),
        ({"view_position": "LL"}, Reason.LATERAL_VIEW),
        ({"view_position": "RL"}, Reason.LATERAL_VIEW),
        ({"view_position": "RLO"}, Reason.NON_FRONTAL_VIEW),
        ({"number_of_frames": 3}, Reason.MULTI_FRAME),
        ({"photometric_interpretation": "PALETTE COLOR"}, Reason.UNSUPPORTED_PHOTOMETRIC),
        ({"rows": None, "columns": None}, Reason.NO_PIXEL_DATA),
    ],
)
def test_rejections_carry_the_named_reason_first(
    changes: dict[str, object], reason: Reason
) -> None:
    verdict = evaluate(replace(CHEST_PA, **changes))  # type: ignore[arg-type]
    assert not verdict.eligible
    assert verdict.reasons[0] is reason
    assert verdict.messages[0]


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"patient_age_years": 0.5}, "age_outside_training_range"),
        ({"patient_age_years": 6.0}, "age_outside_training_range"),
        ({"patient_age_years": 34.0}, "age_outside_training_range"),
        ({"patient_age_years": None}, "age_unknown"),
        ({"view_position": None}, "missing_view_position"),
        ({"body_part_examined": None}, "missing_body_part"),
        ({"photometric_interpretation": "RGB"}, "color_converted"),
        ({"sop_class_uid": None}, "eligibility_unverified"),
    ],
)
def test_flagged_inputs_are_still_eligible(changes: dict[str, object], flag: str) -> None:
    verdict = evaluate(replace(CHEST_PA, **changes))  # type: ignore[arg-type]
    assert verdict.eligible
    assert flag in verdict.flags


@pytest.mark.parametrize("age", [1.0, 3.5, 5.99])
def test_ages_one_to_five_are_in_the_training_range(age: float) -> None:
    assert evaluate(replace(CHEST_PA, patient_age_years=age)).flags == ()


@pytest.mark.parametrize("kind", [SourceKind.JPEG, SourceKind.PNG])
def test_raster_is_scored_but_unverified(kind: SourceKind) -> None:
    md = ImageMetadata(kind=kind, file_sha256="1" * 64, source_name="x.jpeg")
    verdict = evaluate(md)
    assert verdict.eligible and verdict.flags == ("eligibility_unverified",)


def test_every_rejection_is_reported_in_rule_order() -> None:
    md = replace(CHEST_PA, body_part_examined="KNEE", view_position="LL")
    assert evaluate(md).reasons == (Reason.NOT_CHEST, Reason.LATERAL_VIEW)


def test_rules_are_named_checks() -> None:
    assert all(rule.__name__.startswith("check_") for rule in RULES)
