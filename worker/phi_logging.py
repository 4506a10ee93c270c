"""Keep patient data out of logs, whatever ``CXR_LOG_LEVEL`` says.

Our own messages name rows by id and content hash. Some libraries we use log file names
(which senders fill with patient names) or DICOM identifiers: watchdog logs every inotify
event with its path at DEBUG, highdicom logs the source SOP Instance UID at INFO when it
copies the patient module into an SR, pynetdicom dumps every DIMSE message (UIDs) at
DEBUG in ``listen`` and the delivery loop, and pydicom warns with the offending value of an
invalid element (a patient name, a birth date). Those loggers are capped here; the
reliability suite's PHI test runs the whole pipeline at DEBUG to hold this.
"""

from __future__ import annotations

import logging
import warnings

#: Logger name -> the lowest level it may emit.
PHI_LOGGER_LEVELS = {
    "watchdog": logging.WARNING,  # DEBUG: every event with its file path
    "highdicom": logging.WARNING,  # INFO: "copy Patient-related attributes from dataset <UID>"
    "pydicom": logging.ERROR,  # WARNING: "Invalid value for VR PN: '<the value>'"
    "pynetdicom": logging.INFO,  # DEBUG: every PDU and DIMSE message, UIDs included
}


def cap_phi_loggers() -> None:
    """Raise the PHI-prone loggers to their caps and silence pydicom's value warnings."""
    for name, level in PHI_LOGGER_LEVELS.items():
        logger = logging.getLogger(name)
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\..*)?$")
