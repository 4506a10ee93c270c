"""What a RIS's acknowledgement means for a message: delivered, try again later, or never.

Original-mode acknowledgement (HL7 v2.5.1 2.9.2): the RIS answers each message with an ACK
whose MSA-1 is the acknowledgement code (table 0008) and MSA-2 our MSH-10. The rule, as the
SR/SC delivery has for DIMSE statuses (:mod:`pacs.statuses`):

- ``AA`` (and the enhanced-mode ``CA``): delivered, never sent again.
- ``AE`` application error (``CE``): the RIS found an error in the message; the same message
  will meet the same error: **failed** at once, with the error code in words. Except the
  codes of table 0357 that say nothing about the message: 206 *application record locked*,
  207 *application internal error*, and 204 *unknown key identifier* (the RIS does not know
  the accession number or patient yet: the order may reach it later): **retried** on the
  delivery schedule until the give-up time.
- ``AR`` application reject (``CR``): per 2.9.2 the RIS refused the message for reasons
  unrelated to its content (system down, internal error): **retried**. Except the codes that
  say the RIS will never take this kind of message, 200-203 (unsupported message type,
  event, processing id, version id): **failed** at once; a person changes the configuration.
- no ACK within the timeout, a closed connection, an answer that is not HL7, an ACK for
  another message (MSA-2), or a code no table names: **retried** (an odd answer never drops a
  result before the give-up time). The connection is closed: its state is unknown.

The RIS's own text (MSA-3, ERR-8) is never kept or logged: it may quote the patient. Only
the codes are, with the standard's words for them.
"""

from __future__ import annotations

import hl7

from pacs.statuses import Outcome, Verdict

ACCEPTED = frozenset({"AA", "CA"})
ERRORS = frozenset({"AE", "CE"})
REJECTS = frozenset({"AR", "CR"})
#: HL7 table 0357, message error condition codes.
ERROR_CODES: dict[int, str] = {
    0: "message accepted",
    100: "segment sequence error",
    101: "required field missing",
    102: "data type error",
    103: "table value not found",
    104: "value too long",
    200: "unsupported message type",
    201: "unsupported event code",
    202: "unsupported processing id",
    203: "unsupported version id",
    204: "unknown key identifier (the RIS does not know the accession or patient yet)",
    205: "duplicate key identifier",
    206: "application record locked",
    207: "application internal error",
}
TEMPORARY_ERRORS = frozenset({204, 206, 207})
PERMANENT_REJECTS = frozenset({200, 201, 202, 203})


class AckError(ValueError):
    """The answer is not an acknowledgement of the message sent (no patient data)."""


def error_code(ack: hl7.Message) -> int | None:
    """The table 0357 code of an ACK: ERR-3 (v2.5), else ERR-1.4 (v2.3), else MSA-6."""
    for accessor in ("ERR.F3.R1.C1", "ERR.F1.R1.C4.S1", "MSA.F6.R1.C1"):
        try:
            text = str(ack[accessor]).strip()
        except (KeyError, IndexError):
            continue
        if text.isdigit():
            return int(text)
    return None


def read_ack(text: str, control_id: str) -> tuple[str, int | None]:
    """MSA-1 and the error code of the ACK ``text`` for message ``control_id``. Raises
    :class:`AckError` when it is not HL7, has no MSA, or acknowledges another message."""
    try:
        ack = hl7.parse(text.strip("\r\n") + "\r")
        code = str(ack["MSA.F1"]).strip().upper()
        acknowledged = str(ack["MSA.F2"]).strip()
    except Exception as error:  # whatever a garbled answer makes the parser raise
        raise AckError(f"the answer is not an HL7 ACK ({type(error).__name__})") from error
    if acknowledged != control_id:
        raise AckError("the ACK acknowledges another message (MSA-2 is not our MSH-10)")
    return code, error_code(ack)


def classify(code: str, error: int | None) -> Verdict:
    """The meaning of acknowledgement ``code`` (MSA-1) with table 0357 ``error``."""
    said = f"ACK {code or '(empty)'}"
    if error is not None:
        said += f" error {error} ({ERROR_CODES.get(error, 'not in table 0357')})"
    if code in ACCEPTED:
        return Verdict(Outcome.STORED, f"{said}: accepted")
    if code in ERRORS:
        if error in TEMPORARY_ERRORS:
            return Verdict(Outcome.TEMPORARY, f"{said}: application error, temporary")
        return Verdict(
            Outcome.PERMANENT, f"{said}: application error: the RIS will not take this message"
        )
    if code in REJECTS:
        if error in PERMANENT_REJECTS:
            return Verdict(
                Outcome.PERMANENT,
                f"{said}: rejected: the RIS does not take this message (check its interface)",
            )
        return Verdict(Outcome.TEMPORARY, f"{said}: rejected for now (the RIS is not ready)")
    return Verdict(Outcome.TEMPORARY, f"{said}: not an acknowledgement code of table 0008")
