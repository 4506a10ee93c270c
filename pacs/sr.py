"""The triage result as a DICOM Comprehensive SR in the radiograph's study (highdicom).

Content tree (PS3.16 TID 1500 "Measurement Report", one TID 1501 group)::

    Imaging Measurement Report
      Language, Device observer (cxr-triage, model version), Procedure: Plain chest X-ray
      Imaging Measurements
        Measurement Group
          Tracking identifier + UID, Finding: Pneumonia, Finding site: Lung
          Algorithm: cxr-triage <model version>, Source image: the radiograph
          Probability = p {1}          Threshold Value = t {1}
          Pneumonia = Present|Absent   Priority = Urgent|Suspect|Routine
          CAD Processing and Findings Summary = All algorithms succeeded; with|without findings
          [Training population = Outside ...]   only when the row is flagged so
          [Comment = "Patient age unknown / outside 1-5 years: ..."]   the age caveat

A film that was the device's to read but was not scored gets the same tree without
measurements (:func:`build_not_analysed_report`): CAD Processing and Findings Summary =
No algorithms succeeded, and a Comment with the reason in words (:mod:`pacs.not_analysed`).

Codes are in :mod:`pacs.codes`. Patient and study modules are copied from the source by
highdicom; the SR gets a series of its own, is marked RESEARCH content and UNVERIFIED, and its
Series Description says it is not for diagnostic use.
"""

from __future__ import annotations

import highdicom as hd
from highdicom.sr import (
    AlgorithmIdentification,
    ComprehensiveSR,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    RelationshipTypeValues,
    SourceImageForMeasurementGroup,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from ingest.eligibility import TRAINING_AGE_YEARS
from ingest.metadata import patient_age_years
from model.prediction import Label, Prediction
from pacs import codes as cxr_codes
from pacs.identity import (
    MANUFACTURER,
    SR_SERIES_DESCRIPTION,
    SR_SERIES_NUMBER,
    ResultUIDs,
    outside_training_population,
)
from pacs.source import copy_optional_patient_study, instance_number

TRACKING_LABEL = "AI pneumonia triage"
TEXT_MAX_CHARACTERS = 1024  # kept short: a line a PACS viewer shows whole (UT allows more)


def build_report(source: Dataset, prediction: Prediction, uids: ResultUIDs) -> ComprehensiveSR:
    """The SR for ``prediction`` on ``source`` (a header-only read of the radiograph is enough).

    ``source`` comes from :func:`pacs.source.read_source` (Type 2 patient/study attributes
    present). Patient and study modules are copied from it.
    """
    measurements = [
        Measurement(
            name=cxr_codes.PROBABILITY,
            value=round(prediction.probability, 6),
            unit=cxr_codes.NO_UNITS,
        ),
        Measurement(
            name=cxr_codes.THRESHOLD,
            value=round(prediction.threshold, 6),
            unit=cxr_codes.NO_UNITS,
        ),
    ]
    caveat = age_caveat(source)
    return _document(
        source,
        uids,
        prediction.model_version,
        measurements,
        _evaluations(prediction),
        [caveat] if caveat else [],
    )


def build_not_analysed_report(
    source: Dataset, words: str, model_version: str, uids: ResultUIDs
) -> ComprehensiveSR:
    """The "not analysed" SR for a film that was the device's to read but got no score:
    no measurement, CAD Processing and Findings Summary = No algorithms succeeded, and
    ``words`` (why, for the reader) as a Comment. ``model_version``: the deployed model."""
    evaluations = [QualitativeEvaluation(name=cxr_codes.CAD_SUMMARY, value=cxr_codes.NOT_ANALYSED)]
    return _document(source, uids, model_version, [], evaluations, [words])


def age_caveat(source: Dataset) -> str | None:
    """The caveat for a patient whose age the header does not give, or gives outside the
    1-5 years the model learnt from (the same age ingest reads: Patient's Age, else Birth
    Date to Study Date); ``None`` inside the range."""
    years = patient_age_years(source)
    low, high = TRAINING_AGE_YEARS
    trained = f"the model was trained on children aged {low:g}-{high - 1:g} years"
    if years is None:
        return f"Patient age unknown (not in the header): {trained}; the probability may not hold."
    if low <= years < high:
        return None
    return (
        f"Patient age {years:.1f} years is outside the training population: {trained}; the "
        "probability may not hold."
    )


def _document(
    source: Dataset,
    uids: ResultUIDs,
    model_version: str,
    measurements: list[Measurement],
    evaluations: list[QualitativeEvaluation],
    comments: list[str],
) -> ComprehensiveSR:
    algorithm = AlgorithmIdentification(
        name=MANUFACTURER, version=model_version, manufacturer=MANUFACTURER
    )
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=uids.tracking, identifier=TRACKING_LABEL),
        finding_type=cxr_codes.PNEUMONIA,
        finding_sites=[FindingSite(anatomic_location=cxr_codes.LUNG)],
        algorithm_id=algorithm,
        source_images=[SourceImageForMeasurementGroup.from_source_image(source)],
        measurements=measurements or None,
        qualitative_evaluations=evaluations,
    )
    for comment in comments:  # TID 1501: TEXT qualitative evaluations
        group[0].ContentSequence.append(
            TextContentItem(
                name=cxr_codes.COMMENT,
                value=comment[:TEXT_MAX_CHARACTERS],
                relationship_type=RelationshipTypeValues.CONTAINS,
            )
        )
    device = ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=uids.device,
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
            model_name=model_version[:64],
        ),
    )
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=device),
        procedure_reported=cxr_codes.PLAIN_CHEST_XRAY,
        imaging_measurements=[group],
        title=cxr_codes.TITLE,
    )
    document = ComprehensiveSR(
        evidence=[source],
        content=report[0],
        series_instance_uid=uids.sr_series,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.sr_instance,
        instance_number=instance_number(source),
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # a triage aid: the radiologist's report is the definitive one
        is_verified=False,
        series_description=SR_SERIES_DESCRIPTION,
        content_qualification=hd.ContentQualificationValues.RESEARCH,
        coding_schemes=[cxr_codes.local_scheme()],
        manufacturer_model_name=MANUFACTURER,
        software_versions=model_version[:64],
    )
    copy_optional_patient_study(source, document)
    return document


def _evaluations(prediction: Prediction) -> list[QualitativeEvaluation]:
    """Label, priority, analysed-with/without-findings, and the population caveat when the
    row carries it."""
    pneumonia = prediction.label is Label.PNEUMONIA
    evaluations = [
        QualitativeEvaluation(
            name=cxr_codes.PNEUMONIA, value=cxr_codes.LABEL_VALUES[prediction.label]
        ),
        QualitativeEvaluation(
            name=cxr_codes.PRIORITY, value=cxr_codes.PRIORITY_VALUES[prediction.priority]
        ),
        QualitativeEvaluation(
            name=cxr_codes.CAD_SUMMARY,
            value=cxr_codes.ANALYSED_WITH_FINDINGS
            if pneumonia
            else cxr_codes.ANALYSED_WITHOUT_FINDINGS,
        ),
    ]
    if outside_training_population(prediction):
        evaluations.append(
            QualitativeEvaluation(
                name=cxr_codes.TRAINING_POPULATION, value=cxr_codes.OUTSIDE_TRAINING_POPULATION
            )
        )
    return evaluations


__all__ = ["age_caveat", "build_not_analysed_report", "build_report"]
