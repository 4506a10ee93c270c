"""What a PACS's answer means for a result object: stored, try again later, or never.

Two kinds of answer end a try without storing:

- a **C-STORE response status** (PS3.4 B.2.3 Storage statuses, PS3.7 Annex C general
  statuses): :func:`classify_status`;
- an **A-ASSOCIATE-RJ** (PS3.8 9.3.4): :func:`classify_rejection`.

Each is *temporary* (the same object, sent later, may well be stored: retried on the
delivery schedule, for hours) or *permanent* (sending it again changes nothing until a
person changes the PACS's configuration or the object: failed at once, the reason in
words). The rule for statuses no table names: a failure the standard calls a *refusal for
lack of resources*, or one we cannot place, is temporary, so an odd status never drops a
result before the give-up time; one that says the object or its class is unacceptable is
permanent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    STORED = "stored"  # success, or a warning (the PACS kept the object)
    TEMPORARY = "temporary"  # retry on the schedule
    PERMANENT = "permanent"  # fail now; a person must act


@dataclass(frozen=True)
class Verdict:
    """What an answer means, and the words an operator reads (``last_error``)."""

    outcome: Outcome
    words: str

    @property
    def permanent(self) -> bool:
        return self.outcome is Outcome.PERMANENT


#: PS3.4 B.2.3 and PS3.7 C: the warnings, kept by the PACS.
WARNINGS: dict[int, str] = {
    0x0001: "warning: requested optional attributes are not supported",
    0x0107: "warning: attribute list error",
    0x0116: "warning: an attribute value is out of range",
    0xB000: "warning: coercion of data elements",
    0xB006: "warning: elements discarded",
    0xB007: "warning: data set does not match SOP Class",
}
#: Failures that say nothing about the object: the PACS may take it later.
TEMPORARY: dict[int, str] = {
    0x0110: "processing failure (the PACS's own error; often a storage or database fault)",
    0x0210: "duplicate invocation (message ID reused within the association)",
    0x0213: "resource limitation",
    0xFE00: "cancelled",
}
#: Failures that will be the same answer every time until a person acts.
PERMANENT: dict[int, str] = {
    0x0105: "no such attribute",
    0x0106: "invalid attribute value",
    0x0112: "no such SOP Instance",
    0x0114: "no such argument",
    0x0115: "invalid argument value",
    0x0117: "invalid object instance",
    0x0118: "no such SOP Class",
    0x0119: "class-instance conflict",
    0x0120: "missing attribute",
    0x0121: "missing attribute value",
    0x0122: "refused: SOP Class not supported",
    0x0124: "refused: not authorised (the PACS does not let this AE title store)",
    0x0211: "unrecognised operation",
    0x0212: "mistyped argument",
}
#: 0x0111: the PACS already holds an instance with this SOP Instance UID. Result UIDs are
#: derived from the source and the model version, so it holds this very object (a re-send):
#: counted as stored, as dcm4chee and Orthanc themselves treat a re-sent instance.
DUPLICATE_SOP_INSTANCE = 0x0111


def classify_status(code: int | None) -> Verdict:
    """The meaning of a C-STORE response status (``None``: no response at all)."""
    if code is None:
        return Verdict(
            Outcome.TEMPORARY, "no response within the DIMSE timeout, or the association ended"
        )
    text = f"0x{code:04X}"
    if code == 0x0000:
        return Verdict(Outcome.STORED, f"{text} success")
    if code in WARNINGS:
        return Verdict(Outcome.STORED, f"{text} {WARNINGS[code]}")
    if code == DUPLICATE_SOP_INSTANCE:
        return Verdict(Outcome.STORED, f"{text} duplicate SOP Instance: the PACS has it")
    if 0xA700 <= code <= 0xA7FF:
        return Verdict(Outcome.TEMPORARY, f"{text} refused: out of resources (temporary)")
    if 0xA900 <= code <= 0xA9FF:
        return Verdict(Outcome.PERMANENT, f"{text} error: data set does not match SOP Class")
    if 0xC000 <= code <= 0xCFFF:
        return Verdict(Outcome.PERMANENT, f"{text} error: cannot understand")
    if code in TEMPORARY:
        return Verdict(Outcome.TEMPORARY, f"{text} {TEMPORARY[code]} (temporary)")
    if code in PERMANENT:
        return Verdict(Outcome.PERMANENT, f"{text} {PERMANENT[code]}")
    if 0xB000 <= code <= 0xBFFF:  # PS3.7 C: the Bxxx range is warnings
        return Verdict(Outcome.STORED, f"{text} warning")
    return Verdict(Outcome.TEMPORARY, f"{text} failure status not defined by the standard")


#: PS3.8 9.3.4 A-ASSOCIATE-RJ: (source, reason) -> words. Source 1 is the called
#: application (service-user), 2 and 3 the peer's DICOM stack (ACSE, presentation).
REJECT_REASONS: dict[tuple[int, int], str] = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised (register this AE title in the PACS)",
    (1, 7): "called AE title not recognised (check CXR_PACS_AE_TITLE)",
    (2, 1): "no reason given (ACSE)",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded (too many associations)",
}
REJECTED_PERMANENT = 1
REJECTED_TRANSIENT = 2


def classify_rejection(result: int, source: int, reason: int) -> Verdict:
    """The meaning of an A-ASSOCIATE-RJ: permanent when the PACS says so (result 1), except
    the presentation layer's congestion and association-limit reasons, which are transient
    by their nature whatever a peer puts in the result field."""
    words = REJECT_REASONS.get((source, reason), f"reason {reason} from source {source}")
    congested = source == 3 and reason in (1, 2)
    if result == REJECTED_PERMANENT and not congested:
        return Verdict(Outcome.PERMANENT, f"rejected the association permanently: {words}")
    return Verdict(Outcome.TEMPORARY, f"rejected the association for now: {words}")
