"""A process that walks PHI-laden inputs through the code paths that leaked (issue 12), with
logging set up as every ``cxr-triage`` process sets it up, at DEBUG.

Run as ``python -m tests.reliability.phi_flow WORKDIR JPEG``; ``test_phi_log_filter`` greps
what it printed. No TensorFlow: the heatmap is given, as the deferred results task gets it.
"""

from __future__ import annotations

import logging
import sys
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
    # Imported here: the test that runs this imports its constants, and the worker's
    # modules create the Celery app's folders under CXR_DATA_DIR when imported.
    from worker import results, service
    from worker.settings import Settings

    service.configure_logging("DEBUG")
    log = logging.getLogger("worker.phi_flow")
    source = cr_dicom(jpeg, work / FILE_NAME, **PHI)
    image = read_image(source)  # the worker's reader, birth date and all
    log.info("read the source: %d x %d", *image.pixels.shape)
    heatmap = np.zeros((8, 8), np.float32)
    settings = Settings(data_dir=work / "data")
    # The deferred results task on it: highdicom meets the caret-less names and the date.
    written = results.publish(settings, None, 6, source, image, PREDICTION, heatmap)  # type: ignore[arg-type]
    log.info("row 6: wrote %d results", len(written))
    # The archived original is not a readable DICOM: pacs.source raised with its file name.
    broken = work / f"broken_{FILE_NAME}"
    broken.write_bytes(b"\0" * 200 + source.read_bytes()[200:400])
    results.publish(settings, None, 7, broken, image, PREDICTION, heatmap)  # type: ignore[arg-type]
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
    log.debug("flow done")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
