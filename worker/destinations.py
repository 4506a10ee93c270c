"""Where results go, wired from the settings: the PACS (:func:`pacs_node`), what the results
task writes for the RIS (:func:`ris_output`) and where the RIS deliverers send it
(:func:`mllp_node`, :func:`fhir_node`). Plain values, no Celery resources: the results task
(:mod:`worker.publishing`) and the operator's commands use them as the delivery loops
(:mod:`worker.deliverers`) do."""

from __future__ import annotations

from pacs.store import PacsNode
from ris.fhir import FhirConfig, FhirNode
from ris.hl7v2 import Hl7Config
from ris.mllp import MllpNode
from ris.outbox import RisOutput
from worker.settings import Settings


def pacs_node(settings: Settings) -> PacsNode | None:
    """The configured PACS, or ``None`` when results only go to the outbox."""
    if not settings.pacs_host:
        return None
    return PacsNode(
        host=settings.pacs_host,
        port=settings.pacs_port,
        called_ae_title=settings.pacs_ae_title,
        calling_ae_title=settings.pacs_calling_ae_title,
        timeout_s=settings.pacs_timeout_s,
    )


def hl7_config(settings: Settings) -> Hl7Config:
    return Hl7Config(
        sending_application=settings.ris_sending_application,
        sending_facility=settings.ris_sending_facility,
        receiving_application=settings.ris_receiving_application,
        receiving_facility=settings.ris_receiving_facility,
        processing_id=settings.ris_processing_id,
        charset=settings.ris_charset,
    )


def ris_output(settings: Settings) -> RisOutput:
    """What the results task writes for the RIS: HL7 when ``CXR_RIS_HOST`` is set, FHIR
    when ``CXR_FHIR_BASE_URL`` is (neither: nothing)."""
    return RisOutput(
        outbox=settings.outbox,
        hl7=hl7_config(settings) if settings.ris_host else None,
        fhir=(
            FhirConfig(settings.fhir_patient_id_system, settings.fhir_accession_system)
            if settings.fhir_base_url
            else None
        ),
    )


def mllp_node(settings: Settings) -> MllpNode | None:
    if not settings.ris_host:
        return None
    return MllpNode(
        host=settings.ris_host,
        port=settings.ris_port,
        charset=settings.ris_charset,
        connect_timeout_s=settings.ris_connect_timeout_s,
        ack_timeout_s=settings.ris_ack_timeout_s,
    )


def fhir_node(settings: Settings) -> FhirNode | None:
    if not settings.fhir_base_url:
        return None
    token = settings.fhir_token.get_secret_value() if settings.fhir_token else None
    return FhirNode(
        base_url=settings.fhir_base_url,
        token=token,
        timeout_s=settings.fhir_timeout_s,
        ca_file=settings.fhir_ca_file,
    )
