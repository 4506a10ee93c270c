"""Which series and instances the results are: deterministic UIDs, numbers, descriptions.

UIDs are derived (PS3.5 B.2: ``2.25.`` + a name-based UUID, version 5 of ISO/IEC 9834-8)
from the source SOP Instance UID, the Study Instance UID and the model version, so a
redelivered task writes the same objects again and the PACS replaces them instead of
showing a duplicate; a new model version makes new objects beside the old ones. All
results of one study and model version share one SR series and one SC series.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from model.content_check import ContentVerdict
from model.prediction import Prediction

MANUFACTURER = "cxr-triage"
NOT_FOR_DIAGNOSTIC_USE = "NOT FOR DIAGNOSTIC USE"
#: Burned into the SC (and coded in the SR) when the image lies outside the population the
#: model learnt from (the content check's middle band, or a header age outside 1-5 years).
OUTSIDE_TRAINING_POPULATION_CAVEAT = (
    "CAUTION: outside the training population (children aged 1-5): the probability may not hold"
)
SR_SERIES_DESCRIPTION = f"AI pneumonia triage SR - {NOT_FOR_DIAGNOSTIC_USE}"
SC_SERIES_DESCRIPTION = f"AI pneumonia triage image - {NOT_FOR_DIAGNOSTIC_USE}"
SR_SERIES_NUMBER = 9901  # high numbers keep the AI series after the acquired ones
SC_SERIES_NUMBER = 9902
LO_MAX_LENGTH = 64  # PS3.5 6.2, VR LO (Series Description)
#: The namespace of cxr-triage's name-based UUIDs (a fixed, random UUID: never change it,
#: or redelivered tasks would stop replacing their own results).
UID_NAMESPACE = uuid.UUID("6f0b6c2e-5d1e-4c1a-9d8e-3c7a1f2b9e40")


def outside_training_population(prediction: Prediction) -> bool:
    """Whether the result must carry :data:`OUTSIDE_TRAINING_POPULATION_CAVEAT`.

    The worklist row's ``outside_training_population`` flag (content check or header age)
    reaches the results as ``prediction.content`` (``worker.publishing``).
    """
    return prediction.content is ContentVerdict.OUTSIDE_POPULATION


def derived_uid(*parts: str) -> str:
    """``2.25.<uuid5(parts)>``: the same parts always give the same UID, at most 44 chars.

    (``pydicom.uid.generate_uid(prefix=None, ...)`` ignores its entropy sources and returns a
    random UUID, so it cannot be used for this.)
    """
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, chr(31).join(parts)).int}"


@dataclass(frozen=True)
class ResultUIDs:
    """The UIDs of the SR and SC made for one source image by one model version."""

    sr_series: str
    sr_instance: str
    sc_series: str
    sc_instance: str
    tracking: str  # TID 4108 tracking UID of the finding
    device: str  # TID 1004 device observer UID: cxr-triage at this model version

    @classmethod
    def derive(
        cls, source_sop_instance_uid: str, study_instance_uid: str, model_version: str
    ) -> ResultUIDs:
        if not (source_sop_instance_uid and study_instance_uid and model_version):
            raise ValueError("SOP Instance UID, Study Instance UID and model version are needed")

        uid = derived_uid
        return cls(
            sr_series=uid("sr-series", study_instance_uid, model_version),
            sr_instance=uid("sr", source_sop_instance_uid, model_version),
            sc_series=uid("sc-series", study_instance_uid, model_version),
            sc_instance=uid("sc", source_sop_instance_uid, model_version),
            tracking=uid("finding", source_sop_instance_uid, model_version),
            device=uid("device", model_version),
        )

    @classmethod
    def not_analysed(
        cls, source_sop_instance_uid: str, study_instance_uid: str, model_version: str
    ) -> ResultUIDs:
        """The UIDs of a "not analysed" SR: the SR series of that model version in the
        study (beside its scored SRs), an instance of its own (never the scored SR's, so a
        film scored later gets its result as a new object), and no SC."""
        scored = cls.derive(source_sop_instance_uid, study_instance_uid, model_version)
        uid = derived_uid
        return cls(
            sr_series=scored.sr_series,
            sr_instance=uid("sr-not-analysed", source_sop_instance_uid, model_version),
            sc_series="",
            sc_instance="",
            tracking=uid("not-analysed", source_sop_instance_uid, model_version),
            device=scored.device,
        )
