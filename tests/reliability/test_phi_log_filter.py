"""The four leaks of issue 12, through real code at DEBUG, with the project's logging set-up.

``phi_flow`` runs, in its own process: the deferred results task on a PHI-laden DICOM whose
patient name has no ``^`` (highdicom warns, quoting it) and whose birth date is malformed
(the SR constructor raised, quoting it); the same task on an archived original that is no
longer DICOM (``pacs.source`` put the file name into the error the task logs); a Celery
worker retrying then failing a task on an ``OSError`` that carries the file's path; and
(issue 25) the RIS messages of the film sent to an MLLP listener and a FHIR endpoint whose
answers quote the accession and name back. None of
the patient's identifiers, nor the file name, may reach the output; each event must still
be logged (by row id, exception type, errno).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.corpus import dataset_jpegs
from tests.reliability.phi_flow import FILE_NAME, PHI

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
REPO = Path(__file__).resolve().parents[2]


def test_no_patient_data_reaches_the_logs_of_the_leaky_paths(tmp_path: Path) -> None:
    jpeg = dataset_jpegs(1)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env["CXR_DATA_DIR"] = str(tmp_path / "data")  # the Celery app's defaults live there
    result = subprocess.run(
        [sys.executable, "-m", "tests.reliability.phi_flow", str(tmp_path), str(jpeg)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-4000:]
    needles = [*PHI.values(), "Zyxwvutsonian", "Quixotella", "Drwhoville", "77341928", FILE_NAME]
    leaked = [needle for needle in needles if needle in text]
    assert leaked == [], f"PHI in the logs: {leaked}"
    # ... and every event is still there, named by what the project can vouch for.
    assert "DEBUG" in text
    assert "UserWarning at " in text and "highdicom" in text  # the warning, not its text
    assert "row 6: wrote 2 results" in text  # a malformed birth date no longer costs the SR
    assert "row 7: no SR/SC" in text  # recorded as the row's failed results, by row id
    assert "SourceHeaderError: the source is not a readable DICOM file" in text
    assert "retry:" in text and "FileNotFoundError: [Errno 2] No such file or directory" in text
    # issue 25: the RIS path, every event logged, no accession, name or token
    assert "row 9: wrote 4 results" in text  # SR, SC, HL7, FHIR
    assert "RIS MLLP 127.0.0.1" in text and "unreachable" in text
    assert "ACK AE: application error" in text  # the permanent AE, in the standard's words
    assert "FHIR http://127.0.0.1" in text and "HTTP 400" in text
    assert "token-" not in text
