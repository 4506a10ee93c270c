"""Every destination says the same of a result file it cannot send, and sends nothing:
gone from the outbox, unreadable (a folder where the file was), or refused by its reader
(garbage). One rule (:func:`pacs.store.read_each`) for the PACS, the MLLP and the FHIR
sender; none of them connects for a batch without a sendable file (the ports are closed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacs.store import BatchResult, Outgoing, PacsNode, store_batch
from ris.fhir import FhirNode
from ris.mllp import MllpNode
from tests.support import free_port


def _pacs(items: list[Outgoing]) -> BatchResult:
    return store_batch(items, PacsNode("127.0.0.1", free_port(), "NOBODY", timeout_s=2.0))


def _mllp(items: list[Outgoing]) -> BatchResult:
    return MllpNode("127.0.0.1", free_port(), connect_timeout_s=2.0).send_batch(items)


def _fhir(items: list[Outgoing]) -> BatchResult:
    return FhirNode(f"http://127.0.0.1:{free_port()}/fhir", timeout_s=2).send_batch(items)


@pytest.mark.parametrize(
    ("send", "folder_words", "garbage_words"),
    [
        (_pacs, "not a readable DICOM result of", "not a readable DICOM result of 210 bytes"),
        (_mllp, "cannot be read (Is a directory)", "not a readable HL7 message of 210 bytes"),
        (_fhir, "cannot be read (Is a directory)", "not readable JSON of 210 bytes"),
    ],
    ids=["pacs", "mllp", "fhir"],
)
def test_unsendable_files_are_reported_with_why_and_nothing_is_sent(
    tmp_path: Path, send, folder_words: str, garbage_words: str
) -> None:
    gone = tmp_path / "gone.dcm"
    folder = tmp_path / "folder.dcm"
    folder.mkdir()
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\x00\xffnot a result at all" * 10)
    items = [Outgoing(gone, sop_instance_uid="1.2.3"), Outgoing(folder), Outgoing(garbage)]
    result = send(items)
    assert (result.stored, result.refused, result.unsent) == ([], [], [])
    why = {u.path.name: u.why for u in result.unreadable}
    assert why.keys() == {"gone.dcm", "folder.dcm", "garbage.dcm"}
    assert why["gone.dcm"] == "the file is no longer in the outbox"
    assert folder_words in why["folder.dcm"]
    assert garbage_words in why["garbage.dcm"]
