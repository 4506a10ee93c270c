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
          [Training population = Outside ...]   only when the row is flagged so

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
    SourceImageForMeasurementGroup,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from model.prediction import Prediction
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


def build_report(source: Dataset, prediction: Prediction, uids: ResultUIDs) -> ComprehensiveSR:
    """The SR for ``prediction`` on ``source`` (a header-only read of the radiograph is enough).

    ``source`` comes from :func:`pacs.source.read_source` (Type 2 patient/study attributes
    present). Patient and study modules are copied from it.
    """
    algorithm = AlgorithmIdentification(
        name=MANUFACTURER, version=prediction.model_version, manufacturer=MANUFACTURER
    )
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=uids.tracking, identifier=TRACKING_LABEL),
        finding_type=cxr_codes.PNEUMONIA,
        finding_sites=[FindingSite(anatomic_location=cxr_codes.LUNG)],
        algorithm_id=algorithm,
        source_images=[SourceImageForMeasurementGroup.from_source_image(source)],
        measurements=[
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
        ],
        qualitative_evaluations=_evaluations(prediction),
    )
    device = ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=uids.device,
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
            model_name=prediction.model_version[:64],
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
        software_versions=prediction.model_version[:64],
    )
    copy_optional_patient_study(source, document)
    return document


def _evaluations(prediction: Prediction) -> list[QualitativeEvaluation]:
    """Label and priority, and the population caveat when the row carries it."""
    evaluations = [
        QualitativeEvaluation(
            name=cxr_codes.PNEUMONIA, value=cxr_codes.LABEL_VALUES[prediction.label]
        ),
        QualitativeEvaluation(
            name=cxr_codes.PRIORITY, value=cxr_codes.PRIORITY_VALUES[prediction.priority]
        ),
    ]
    if outside_training_population(prediction):
        evaluations.append(
            QualitativeEvaluation(
                name=cxr_codes.TRAINING_POPULATION, value=cxr_codes.OUTSIDE_TRAINING_POPULATION
            )
        )
    return evaluations


__all__ = ["build_report"]
