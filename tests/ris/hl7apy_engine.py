"""A second, independent HL7 v2 implementation as the RIS: ``hl7apy``'s MLLP server, its
own process: ``python -m tests.ris.hl7apy_engine PORT RECORD``.

No RIS or interface engine (Mirth/NextGen Connect, Rhapsody, Cloverleaf, HAPI's) installs
from PyPI, npm or Debian here; hl7apy (MIT, on PyPI) is the nearest thing: it parses every
message against the HL7 v2.5.1 message structures and data types at STRICT validation, as
an engine's inbound channel would, and answers AA when the ORU^R01 is valid, AE with error
102 (data type error) and the reason when it is not. Like several engines, it closes the
connection after each ACK. Each message is recorded as a JSON line.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.mllp import AbstractErrorHandler, AbstractHandler, MLLPServer
from hl7apy.parser import parse_message

LOCK = threading.Lock()
RECORD: Path = Path()


def _ack(message: Message | None, control_id: str, code: str, error: str = "") -> str:
    ack = Message("ACK", version="2.5.1")
    ack.msh.msh_3 = "RIS"
    ack.msh.msh_5 = "CXR_TRIAGE"
    ack.msh.msh_9 = "ACK^R01^ACK"
    ack.msh.msh_10 = f"ACK{control_id}"[:20]
    ack.msh.msh_11 = "P"
    ack.msa.msa_1 = code
    ack.msa.msa_2 = control_id
    if error:
        ack.add_segment("ERR")
        ack.err.err_3 = "102^Data type error^HL70357"
        ack.err.err_4 = "E"
    return "\x0b" + ack.to_mllp().strip("\x0b\x1c\r") + "\r\x1c\r"


def _record(entry: dict[str, object]) -> None:
    with LOCK, RECORD.open("a", encoding="utf-8") as out:
        out.write(json.dumps(entry, ensure_ascii=False) + "\n")


class OruHandler(AbstractHandler):
    def reply(self) -> str:
        text = self.incoming_message
        control_id = text.split("\r", 1)[0].split("|")[9]
        try:
            message = parse_message(
                text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True
            )
            message.validate()
            result = message.oru_r01_patient_result
            order = result.oru_r01_order_observation
            entry = {
                "control_id": control_id,
                "valid": True,
                "accession": order.obr.obr_3.to_er7(),
                "patient_id": result.oru_r01_patient.pid.pid_3.to_er7(),
                "observations": len(order.children) - 2,
                "charset": message.msh.msh_18.to_er7(),
            }
            _record(entry)
            return _ack(message, control_id, "AA")
        except Exception as error:  # noqa: BLE001  any invalid message is answered AE
            _record({"control_id": control_id, "valid": False, "error": str(error)[:500]})
            return _ack(None, control_id, "AE", str(error))


class ErrorHandler(AbstractErrorHandler):
    def reply(self) -> str:
        _record({"valid": False, "error": f"{type(self.exc).__name__}"})
        return ""


if __name__ == "__main__":
    RECORD = Path(sys.argv[2])
    handlers = {"ORU^R01^ORU_R01": (OruHandler,), "ERR": (ErrorHandler,)}
    MLLPServer("127.0.0.1", int(sys.argv[1]), handlers, timeout=30).serve_forever()
