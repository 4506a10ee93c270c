"""The RIS tests' real components: the MLLP listener process (:mod:`tests.ris.listener`)
and worklist rows whose ORU^R01 files are written by the real :mod:`ris.outbox`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from db.models import ResultKind, utcnow
from db.results import WrittenObject, record_written
from db.worklist import Arrival, ScoreValues, admit
from model.prediction import Label, Prediction, Priority
from pacs.source import read_source
from ris.exam import Finding
from ris.fhir import FhirConfig
from ris.hl7v2 import Hl7Config
from ris.outbox import RisOutput, write_messages
from tests.ingest.dicom_factory import base_dataset, set_pixels
from tests.support import wait_until
from tests.support.worklist import record_scored

REPO = Path(__file__).resolve().parents[2]
URGENT = Prediction(0.8731, Label.PNEUMONIA, Priority.URGENT, 0.5, "fake-1.0")
SUSPECT = Prediction(0.4212, Label.NORMAL, Priority.SUSPECT, 0.5, "fake-1.0")
ROUTINE = Prediction(0.0712, Label.NORMAL, Priority.ROUTINE, 0.5, "fake-1.0")


def _connectable(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


@dataclass
class RunningListener:
    port: int
    record: Path
    process: subprocess.Popen[bytes]
    log: Path

    def messages(self) -> list[dict]:  # type: ignore[type-arg]
        if not self.record.is_file():
            return []
        return [json.loads(line) for line in self.record.read_text("utf-8").splitlines()]

    def stop(self) -> None:
        """Down: the process is killed (connections refused from now on)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@contextlib.contextmanager
def listener(
    port: int, record: Path, answers: str = "", then: str = "AA"
) -> Iterator[RunningListener]:
    """The MLLP listener as its own process on ``port``, recording into ``record``."""
    log = record.with_suffix(f".{port}.log")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.ris.listener",
                str(port),
                str(record),
                "--answers",
                answers,
                "--then",
                then,
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = RunningListener(port, record, process, log)
    try:
        wait_until(lambda: _connectable(port) or process.poll() is not None, 30, "the listener")
        assert process.poll() is None, log.read_text()
        yield running
    finally:
        running.stop()


def chest_dicom(path: Path, index: int, **header: object) -> Path:
    """A small CR chest PA of its own patient and accession (``ACC<index>``)."""
    ds = set_pixels(base_dataset(64, 64), np.full((64, 64), 100 + index % 50, dtype=np.uint8))
    ds.PatientName = f"Family{index}^Given{index}"
    ds.PatientID = f"PID{index:05d}"
    ds.AccessionNumber = f"ACC{index:05d}"
    ds.PatientBirthDate = "20210315"
    ds.PatientSex = "F"
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    if not all(str(v).isascii() for v in header.values()):
        ds.SpecificCharacterSet = "ISO_IR 192"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def output(outbox: Path, *, fhir: bool = False, hl7: bool = True, **config: str) -> RisOutput:
    return RisOutput(
        outbox=outbox,
        hl7=Hl7Config(**config) if hl7 else None,
        fhir=FhirConfig() if fhir else None,
    )


def add_exams(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    predictions: list[Prediction],
    ris: RisOutput | None = None,
    start: int = 0,
    **header: object,
) -> list[int]:
    """One scored row per prediction, its RIS messages written by :mod:`ris.outbox` and
    tracked ``pending``; returns the row ids (in order)."""
    ris = ris or output(tmp_path / "outbox")
    ids = []
    for index, prediction in enumerate(predictions, start=start):
        source = chest_dicom(tmp_path / "archive" / f"{index}.dcm", index, **header)
        written = write_messages(
            ris, read_source(source), Finding(prediction.model_version, prediction), utcnow()
        )
        with sessions.begin() as session:
            entry, _ = admit(session, Arrival(f"{index:064d}", source.name, str(source), "dicom"))
            scored = ScoreValues(
                prediction.probability,
                prediction.label.value,
                prediction.priority.value,
                prediction.priority.rank,
                prediction.threshold,
                prediction.model_version,
            )
            record_scored(session, entry, scored, str(source))
            record_written(session, entry.id, written, utcnow())
            ids.append(entry.id)
    return ids


def hl7_written(written: list[WrittenObject]) -> list[WrittenObject]:
    return [w for w in written if w.kind is ResultKind.HL7]


@contextlib.contextmanager
def fhir_server(
    port: int, record: Path, token: str, answers: str = ""
) -> Iterator[RunningListener]:
    """The recording FHIR endpoint (:mod:`tests.ris.fhir_server`) as its own process."""
    log = record.with_suffix(f".{port}.log")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.ris.fhir_server",
                str(port),
                str(record),
                token,
                "--answers",
                answers,
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = RunningListener(port, record, process, log)
    try:
        wait_until(lambda: _connectable(port) or process.poll() is not None, 30, "the server")
        assert process.poll() is None, log.read_text()
        yield running
    finally:
        running.stop()


@contextlib.contextmanager
def hl7apy_engine(port: int, record: Path) -> Iterator[RunningListener]:
    """hl7apy's MLLP server validating at STRICT (:mod:`tests.ris.hl7apy_engine`)."""
    log = record.with_suffix(f".{port}.log")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.ris.hl7apy_engine", str(port), str(record)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = RunningListener(port, record, process, log)
    try:
        wait_until(lambda: _connectable(port) or process.poll() is not None, 30, "hl7apy")
        assert process.poll() is None, log.read_text()
        yield running
    finally:
        running.stop()
