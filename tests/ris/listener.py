"""A real MLLP listener for the tests, built from the ``hl7`` library's asyncio server, run
as its own process: ``python -m tests.ris.listener PORT RECORD [--answers A,B,...] [--then X]``.

Every message it reads is parsed with the library (so the message is what an HL7 parser
makes of it) and recorded as one JSON line in RECORD: its control id, accession number,
tier, probability, the decoded patient fields, and the raw text. It answers with the
library's own ACK (:meth:`hl7.Message.create_ack`), the answers given in order, then
``--then`` for the rest:

- ``AA``, ``AE``, ``AR`` (optionally ``:CODE``, an ERR-3 table 0357 code, e.g. ``AE:207``);
- ``silent`` (no answer: the sender's ACK timeout), ``close`` (the connection closed
  without an answer), ``garbage`` (an MLLP block that is not HL7), ``other`` (an ACK whose
  MSA-2 names another message). Messages not acknowledged with ``AA`` are recorded too,
  with their answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from pathlib import Path

import hl7
from hl7.mllp import start_hl7_server


def _field(message: hl7.Message, accessor: str) -> str:
    try:
        return str(message[accessor])
    except (KeyError, IndexError):
        return ""


def _first(segment: hl7.Segment, field: int) -> str:
    """The first component of a field, as sent (still escaped)."""
    return str(segment(field)).split("^")[0] if len(segment) > field else ""


def _obx(message: hl7.Message, code: str) -> str:
    for segment in message.segments("OBX"):
        if _first(segment, 3) == code:
            return message.unescape(_first(segment, 5))
    return ""


def describe(message: hl7.Message) -> dict[str, object]:
    return {
        "control_id": _field(message, "MSH.F10"),
        "message_type": _field(message, "MSH.F9.R1.C1") + "^" + _field(message, "MSH.F9.R1.C2"),
        "charset": _field(message, "MSH.F18"),
        "processing_id": _field(message, "MSH.F11"),
        "sending_application": message.unescape(str(message.segment("MSH")(3))),
        "receiving_application": message.unescape(str(message.segment("MSH")(5))),
        "patient_id": _field(message, "PID.F3.R1.C1"),
        "issuer": _field(message, "PID.F3.R1.C4"),
        "family_name": _field(message, "PID.F5.R1.C1"),
        "given_name": _field(message, "PID.F5.R1.C2"),
        "middle_name": _field(message, "PID.F5.R1.C3"),
        "accession": _field(message, "OBR.F3"),
        "accession_orc": _field(message, "ORC.F3"),
        "accession_obr18": _field(message, "OBR.F18"),
        "result_status": _field(message, "OBR.F25"),
        "tier": _obx(message, "260870009"),
        "probability": _obx(message, "122157"),
        "analysis": _obx(message, "111017"),
        "model_version": _obx(message, "111003"),
        "study_instance_uid": _obx(message, "110180"),
        "comments": [
            message.unescape(_first(s, 5))
            for s in message.segments("OBX")
            if _first(s, 3) == "121106"
        ],
        "obx_status": sorted({str(s(11)) for s in message.segments("OBX")}),
    }


class Listener:
    def __init__(self, record: Path, answers: list[str], then: str) -> None:
        self.record = record
        self.answers = answers
        self.then = then
        self.connections = 0

    def answer_for_next(self) -> str:
        return self.answers.pop(0) if self.answers else self.then

    def write(self, entry: dict[str, object]) -> None:
        with self.record.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")

    async def serve(self, reader, writer) -> None:  # type: ignore[no-untyped-def]
        self.connections += 1
        connection = f"{os.getpid()}-{self.connections}"
        try:
            while not reader.at_eof():
                try:
                    message = await reader.readmessage()
                except asyncio.IncompleteReadError:
                    return
                answer = self.answer_for_next()
                entry = describe(message)
                entry.update(
                    answer=answer, received=time.time(), raw=str(message), connection=connection
                )
                self.write(entry)
                code, _, error = answer.partition(":")
                if code == "silent":
                    await asyncio.sleep(3600)
                    return
                if code == "close":
                    return
                if code == "garbage":
                    writer.writeblock(b"this is not an HL7 message")
                elif code == "other":
                    ack = message.create_ack("AA")
                    ack.assign_field("SOMEONE-ELSE", "MSA", 1, 2)
                    writer.writemessage(ack)
                else:
                    ack = message.create_ack(code)
                    if error:
                        err = ack.create_segment([ack.create_field(["ERR"])])
                        err.assign_field(error, 3, 1, 1)
                        err.assign_field("HL70357", 3, 1, 3)
                        err.assign_field("E", 4)
                        err.assign_field(
                            f"no order {entry['accession']} for {entry['family_name']}", 8
                        )
                        ack.append(err)
                    # a RIS's own words often quote the message: the sender must never keep them
                    ack.assign_field(
                        f"{code} for {entry['accession']} {entry['family_name']}", "MSA", 1, 3
                    )
                    writer.writemessage(ack)
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def main(port: int, record: Path, answers: list[str], then: str) -> None:
    listener = Listener(record, answers, then)
    server = await start_hl7_server(
        listener.serve, "127.0.0.1", port, encoding="utf-8", reuse_address=True
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("record", type=Path)
    parser.add_argument("--answers", default="")
    parser.add_argument("--then", default="AA")
    args = parser.parse_args()
    answers = [a for a in args.answers.split(",") if a]
    asyncio.run(main(args.port, args.record, answers, args.then))
