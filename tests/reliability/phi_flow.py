"""A process that walks PHI-laden inputs through the code paths that leaked (issue 12), with
logging set up as every ``cxr-triage`` process sets it up, at DEBUG.

Run as ``python -m tests.reliability.phi_flow WORKDIR JPEG``; ``test_phi_log_filter`` greps
what it printed. No TensorFlow: the heatmap is given, as the deferred results task gets it.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
from celery import Celery
from celery.contrib.testing.worker import start_worker

from ingest import IngestError, read_image
from model.prediction import Label, Prediction, Priority
from tests.corpus import cr_dicom

PHI = {
    "PatientName": "Zyxwvutsonian Quixotella",  # no '^': highdicom warns, quoting it
    "PatientID": "PHI-ID-77341928",
    "PatientBirthDate": "2019-04-17",  # not a DA (YYYYMMDD): pydicom warns, quoting it
    "AccessionNumber": "ACC98127364",
    "ReferringPhysicianName": "Drwhoville Hippocratia",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.77341928112233445566",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.77341928112233445577",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.77341928112233445588",
}
FILE_NAME = "Zyxwvutsonian_Quixotella_PHI-ID-77341928.dcm"
PREDICTION = Prediction(0.91, Label.PNEUMONIA, Priority.URGENT, 0.4, "sepcnn-test-1.0")

celery = Celery("phi_flow", broker="memory://", backend="cache+memory://")


@celery.task(bind=True, autoretry_for=(OSError,), max_retries=1, default_retry_delay=0)
def read_missing(self: object, path: str) -> int:
    """An OSError that carries the file's path, through Celery's own retry and failure logs
    (as the triage task's autoretry on ``OSError`` meets a failed archive move)."""
    return len(Path(path).read_bytes())


def main(work: Path, jpeg: Path) -> None:
    # Imported here: the test that runs this imports only its constants.
    from worker import publishing, service
    from worker.settings import Settings

    service.configure_logging("DEBUG")
    log = logging.getLogger("worker.phi_flow")
    source = cr_dicom(jpeg, work / FILE_NAME, **PHI)
    image = read_image(source)  # the worker's reader, birth date and all
    log.info("read the source: %d x %d", *image.pixels.shape)
    heatmap = np.zeros((8, 8), np.float32)
    settings = Settings(data_dir=work / "data")
    # The deferred results task on it: highdicom meets the caret-less names and the date.
    written = publishing.publish(settings, None, 6, source, image, PREDICTION, heatmap)  # type: ignore[arg-type]
    log.info("row 6: wrote %d results", len(written))
    # The archived original is not a readable DICOM: pacs.source raised with its file name.
    broken = work / f"broken_{FILE_NAME}"
    broken.write_bytes(b"\0" * 200 + source.read_bytes()[200:400])
    publishing.publish(settings, None, 7, broken, image, PREDICTION, heatmap)  # type: ignore[arg-type]
    # Celery retries an OSError whose message names the file.
    with start_worker(celery, pool="solo", perform_ping_check=False, loglevel="DEBUG"):
        outcome = read_missing.delay(str(work / "missing" / FILE_NAME))
        try:
            outcome.get(timeout=60, propagate=True)
        except OSError:
            log.info("the missing file was given up on after its retry")
    try:
        read_image(broken)
    except IngestError as error:
        log.warning("row 8: unreadable: %s", error)
    ris_path(work, source, image, heatmap)
    log.debug("flow done")


def ris_path(work: Path, source: Path, image: object, heatmap: np.ndarray) -> None:
    """Issue 25: the RIS messages of the same film, written by the results task and sent
    by the delivery loops at DEBUG to a listener that answers AE then AR then times out,
    each ACK quoting the accession and name back (as RISs do), and to a FHIR endpoint that
    answers 400 (its diagnostics quoting the resource), then 401."""
    from db import migrate
    from db.engine import make_engine, make_session_factory
    from db.models import ResultKind, utcnow
    from db.results import record_written
    from db.worklist import Arrival, admit
    from pacs.delivery import Deliverer, DeliveryPolicy
    from tests.ris.support import fhir_server, listener
    from tests.support import free_port
    from worker import publishing
    from worker.destinations import fhir_node, mllp_node
    from worker.settings import Settings

    log = logging.getLogger("worker.phi_flow")
    url = f"sqlite:///{work / 'ris.sqlite3'}"
    migrate.upgrade(url)
    sessions = make_session_factory(make_engine(url))
    port, fhir_port = free_port(), free_port()
    settings = Settings(
        data_dir=work / "data",
        database_url=url,
        ris_host="127.0.0.1",
        ris_port=port,
        ris_ack_timeout_s=1,
        fhir_base_url=f"http://127.0.0.1:{fhir_port}/fhir",
        fhir_token="token-PHI-ID-77341928-not-a-secret",
    )
    written = publishing.publish(settings, None, 9, source, image, PREDICTION, heatmap)  # type: ignore[arg-type]
    log.info("row 9: wrote %d results", len(written))
    with sessions.begin() as session:
        entry, _ = admit(session, Arrival("9" * 64, "x.dcm", "/x.dcm", "dicom"))
        record_written(session, entry.id, [w for w in written if hasattr(w, "kind")], utcnow())
    policy = DeliveryPolicy(backoff_start_s=0.1, backoff_max_s=0.1, drain_in_order=True)
    mllp, fhir = mllp_node(settings), fhir_node(settings)
    assert mllp is not None and fhir is not None
    hl7_loop = Deliverer(sessions, mllp, policy, kinds=(ResultKind.HL7,))
    fhir_loop = Deliverer(sessions, fhir, policy, kinds=(ResultKind.FHIR,))
    hl7_loop.deliver_once()  # nobody listens yet: unreachable
    with listener(port, work / "ris.jsonl", answers="AR,silent,AE:204,AE"):
        for _ in range(4):
            time.sleep(1.2)
            hl7_loop.deliver_once()
    with fhir_server(fhir_port, work / "fhir.jsonl", "other", answers="503,400"):
        for _ in range(2):
            time.sleep(0.3)
            fhir_loop.deliver_once()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
