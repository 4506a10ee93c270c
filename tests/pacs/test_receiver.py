"""The DICOM receiver (``cxr-triage listen``'s Storage SCP) on a free localhost port, driven by
dcmtk's ``storescu``/``echoscu`` (as a modality or PACS would) and by a pynetdicom SCU that
proposes exactly one transfer syntax per test."""

from __future__ import annotations

import io
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLosslessSV1
from pynetdicom import AE

from ingest.dicom import decodable_transfer_syntaxes
from pacs.peers import parse_peers
from pacs.receiver import (
    CANNOT_UNDERSTAND,
    DATA_SET_MISMATCH,
    DX_FOR_PRESENTATION,
    Receiver,
    ReceiverConfig,
)
from tests.ingest.dicom_factory import VARIANTS, jpeg_ls_encoder_available
from tests.pacs.scp import free_port

AE_TITLE = "CXR_TEST_NODE"
#: dcmtk's tools (Debian ``dcmtk``), never pynetdicom's own ``storescu`` in the virtualenv.
STORESCU = shutil.which("storescu", path="/usr/bin:/usr/local/bin") or "storescu"
ECHOSCU = shutil.which("echoscu", path="/usr/bin:/usr/local/bin") or "echoscu"
needs_dcmtk = pytest.mark.skipif(
    not Path(STORESCU).is_absolute() or not Path(ECHOSCU).is_absolute(),
    reason="dcmtk not installed",
)


@pytest.fixture
def small_grey(reference_grey: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(reference_grey[::4, ::4])


def start(tmp_path: Path, **overrides: object) -> Receiver:
    values: dict[str, object] = {
        "inbox": tmp_path / "inbox",
        "ae_title": AE_TITLE,
        "port": free_port(),
        "host": "127.0.0.1",
        "idle_timeout_s": 10.0,
    }
    values.update(overrides)
    receiver = Receiver(ReceiverConfig(**values))  # type: ignore[arg-type]
    receiver.start()
    return receiver


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    running = start(tmp_path)
    yield running
    running.stop()


def send(
    receiver: Receiver, ds: FileDataset, *, calling: str = "MODALITY", called: str = AE_TITLE
) -> tuple[bool, pydicom.Dataset | None]:
    """C-STORE ``ds`` in its own transfer syntax only; (established, response status)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", receiver.config.port, ae_title=called)
    if not assoc.is_established:
        return False, None
    try:
        if not any(ctx.abstract_syntax == ds.SOPClassUID for ctx in assoc.accepted_contexts):
            return True, None  # refused at negotiation
        return True, assoc.send_c_store(ds)
    finally:
        assoc.release()


def inbox_files(receiver: Receiver) -> list[Path]:
    """What the watcher would see: the receiver's own dot-folder is not the inbox's."""
    return sorted(p for p in receiver.config.inbox.iterdir() if not p.name.startswith("."))


def radiograph_variant(name: str, grey: np.ndarray) -> FileDataset:
    """One of ingest's corpus encodings, as a sender reads it from its disk."""
    variant = next(v for v in VARIANTS if v.name == name)
    buffer = io.BytesIO()
    variant.build(grey).save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize(
    "name",
    [
        "native_8bit",
        "rle_16bit",
        "jpeg_ls_12bit",
        "jpeg2000_16bit",
        "htj2k_16bit",
        "jpeg_lossless_sv1_12bit",
        "jpeg_lossless_p14_16bit",
        "jpeg_extended_12bit",
        "deflated",
        "implicit_vr",
        "dx_for_presentation_16bit",
    ],
)
def test_every_transfer_syntax_ingest_decodes_is_accepted_and_kept_as_sent(
    receiver, small_grey, name
):
    if name == "jpeg_ls_12bit" and not jpeg_ls_encoder_available():
        pytest.skip("no JPEG-LS encoder to build the test file")
    ds = radiograph_variant(name, small_grey)
    assert ds.file_meta.TransferSyntaxUID in decodable_transfer_syntaxes()
    established, status = send(receiver, ds)
    assert established and status is not None and status.Status == 0x0000
    [written] = inbox_files(receiver)
    assert written.name == f"{ds.SOPInstanceUID}.dcm"
    arrived = pydicom.dcmread(written)
    assert arrived.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert arrived.PixelData == ds.PixelData  # never re-encoded
    np.testing.assert_array_equal(arrived.pixel_array, ds.pixel_array)


def test_c_echo_is_answered(receiver):
    ae = AE(ae_title="MONITOR")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", receiver.config.port, ae_title=AE_TITLE)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


def test_other_sop_classes_are_refused_at_negotiation(receiver, small_grey):
    ds = radiograph_variant("native_8bit", small_grey)
    for sop_class in (CTImageStorage, "1.2.840.10008.5.1.4.1.1.1.1.1"):  # CT, DX for processing
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        # every context refused: the SCU gives up before sending a byte of the dataset
        assert send(receiver, ds) == (False, None), sop_class
    assert inbox_files(receiver) == []


def test_a_header_ingest_would_refuse_gets_a_failure_status_that_says_why(receiver, small_grey):
    ds = radiograph_variant("native_8bit", small_grey)
    ds.ViewPosition = "LL"
    established, status = send(receiver, ds)
    assert established and status is not None
    assert status.Status == CANNOT_UNDERSTAND
    assert status.ErrorComment == "not eligible: lateral_view"
    assert inbox_files(receiver) == []  # the temporary file is gone too


def test_a_dx_for_presentation_of_another_body_part_is_refused(receiver, small_grey):
    ds = radiograph_variant("dx_for_presentation_16bit", small_grey)
    assert ds.SOPClassUID == DX_FOR_PRESENTATION
    ds.BodyPartExamined = "KNEE"
    _, status = send(receiver, ds)
    assert status is not None and status.Status == CANNOT_UNDERSTAND
    assert "not_chest" in status.ErrorComment or "body" in status.ErrorComment


def test_an_object_over_the_size_limit_aborts_its_association_as_it_passes(tmp_path, small_grey):
    receiver = start(tmp_path, max_object_bytes=1_000)  # the 56x56 radiograph is ~3.5 kB
    try:
        ds = radiograph_variant("native_8bit", small_grey)
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
        assoc = ae.associate("127.0.0.1", receiver.port, ae_title=AE_TITLE)
        assert assoc.is_established
        status = assoc.send_c_store(ds)
        assert "Status" not in status  # no response: the association was aborted
    finally:
        receiver.stop()
    assert inbox_files(receiver) == []
    assert list((tmp_path / "inbox").rglob("*.part")) == []


def test_callers_off_the_allow_list_and_a_wrong_called_title_are_rejected(tmp_path, small_grey):
    receiver = start(tmp_path, peers=parse_peers(" PACS1@127.0.0.1 , MODALITY@127.0.0.1 "))
    try:
        ds = radiograph_variant("native_8bit", small_grey)
        assert send(receiver, ds, calling="INTRUDER") == (False, None)
        assert send(receiver, ds, called="SOMEONE_ELSE") == (False, None)
        established, status = send(receiver, ds, calling="PACS1")
        assert established and status is not None and status.Status == 0
    finally:
        receiver.stop()
    assert len(inbox_files(receiver)) == 1


def test_a_sender_supplied_uid_never_escapes_the_inbox(receiver, small_grey, tmp_path):
    ds = radiograph_variant("native_8bit", small_grey)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ds.SOPClassUID, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", receiver.config.port, ae_title=AE_TITLE)
    ds.SOPInstanceUID = "../../escape"  # not a UID: the file gets a random name instead
    status = assoc.send_c_store(ds)
    assoc.release()
    [written] = inbox_files(receiver)
    assert status.Status == 0x0000 or status.Status == CANNOT_UNDERSTAND
    assert written.parent == receiver.config.inbox and written.name.startswith("cxr-")
    assert not (tmp_path / "escape").exists()


@needs_dcmtk
def test_dcmtk_storescu_and_echoscu_work_against_the_node(receiver, small_grey, tmp_path):
    files = []
    for name in ("native_8bit", "jpeg_lossless_sv1_12bit"):
        ds = radiograph_variant(name, small_grey)
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append((path, ds))
    port = str(receiver.config.port)
    echo = subprocess.run(
        [ECHOSCU, "-aec", AE_TITLE, "127.0.0.1", port], capture_output=True, text=True
    )
    assert echo.returncode == 0, echo.stderr
    stored = subprocess.run(
        # -xs: propose JPEG Lossless SV1 (the CR/DX favourite) beside the uncompressed ones
        [STORESCU, "-xs", "-aec", AE_TITLE, "-aet", "MODALITY", "127.0.0.1", port]
        + [str(path) for path, _ in files],
        capture_output=True,
        text=True,
    )
    assert stored.returncode == 0, stored.stdout + stored.stderr
    names = {p.name for p in inbox_files(receiver)}
    assert names == {f"{ds.SOPInstanceUID}.dcm" for _, ds in files}
    jpeg = pydicom.dcmread(receiver.config.inbox / f"{files[1][1].SOPInstanceUID}.dcm")
    assert jpeg.file_meta.TransferSyntaxUID == JPEGLosslessSV1


@needs_dcmtk
def test_storescu_hears_the_refusal_of_a_lateral_view(receiver, small_grey, tmp_path):
    ds = radiograph_variant("native_8bit", small_grey)
    ds.ViewPosition = "RL"
    path = tmp_path / "lateral.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = subprocess.run(
        [
            STORESCU,
            "-v",
            "-aec",
            AE_TITLE,
            "-aet",
            "MODALITY",
            "127.0.0.1",
            str(receiver.config.port),
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    assert "Error: CannotUnderstand" in output, output
    assert inbox_files(receiver) == []


@needs_dcmtk
def test_the_listen_command_serves_until_sigterm(tmp_path, small_grey):
    from tests.processes import running, service_env
    from tests.support import wait_until

    port = free_port()
    env = service_env(
        tmp_path,
        f"sqlite:///{tmp_path / 'w.sqlite3'}",
        None,
        CXR_LISTEN_PORT=str(port),
        CXR_LISTEN_HOST="127.0.0.1",
        CXR_LISTEN_PEERS="MODALITY@127.0.0.1",
        CXR_LOG_LEVEL="DEBUG",  # the PHI caps hold at any level
    )
    path = tmp_path / "chest.dcm"
    ds = radiograph_variant("native_8bit", small_grey)
    ds.save_as(path, enforce_file_format=True)
    log = tmp_path / "listen.log"
    with running(["listen"], env, log) as process:

        def echoes() -> bool:
            echo = [ECHOSCU, "-aet", "MODALITY", "-aec", "CXR_TRIAGE", "127.0.0.1", str(port)]
            return subprocess.run(echo, capture_output=True).returncode == 0

        wait_until(echoes, 60, "the node to answer C-ECHO", [log])
        stored = subprocess.run(
            [STORESCU, "-aet", "MODALITY", "-aec", "CXR_TRIAGE", "127.0.0.1", str(port), str(path)],
            capture_output=True,
            text=True,
        )
        assert stored.returncode == 0, stored.stderr
        assert (tmp_path / "inbox" / f"{ds.SOPInstanceUID}.dcm").is_file()
        intruder = subprocess.run(
            [STORESCU, "-aet", "INTRUDER", "-aec", "CXR_TRIAGE", "127.0.0.1", str(port), str(path)],
            capture_output=True,
            text=True,
        )
        assert intruder.returncode != 0
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    text = log.read_text()
    assert "received object" in text
    for value in ("Test^Child", ds.PatientID, ds.SOPInstanceUID, ds.StudyInstanceUID):
        assert str(value) not in text  # no PHI, no identifying UID in its log


# -- checked before Success (issue 20): identity, pixel limits, duplicates, permissions ----


def send_path(receiver: Receiver, path: Path, *, calling: str = "MODALITY") -> int | None:
    from tests.pacs.hostile import send_file

    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    return send_file(receiver.port, path, called=AE_TITLE, calling=calling, syntax=syntax)


def sparse_cr(path: Path, rows: int, columns: int, pixel_bytes: int | None = None, **kw):  # type: ignore[no-untyped-def]
    from tests.pacs.hostile import radiograph_header, write_sparse_radiograph

    size = rows * columns * 2 if pixel_bytes is None else pixel_bytes
    return write_sparse_radiograph(path, radiograph_header(rows, columns), size, **kw)


def test_a_data_set_whose_uid_is_not_the_commands_is_refused(receiver, tmp_path):
    """Named and routed by the command's UID, the file would carry another identity than its
    content; dcmtk's storescp answers 0xA900 as here. Before: Success."""
    path = sparse_cr(tmp_path / "cr.dcm", 64, 64, affected_uid="1.2.826.0.1.3680043.8.498.1")
    assert send_path(receiver, path) == DATA_SET_MISMATCH
    assert inbox_files(receiver) == []


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        ("rows_columns_over_the_limit", "too_large"),
        ("jpeg_sof_over_the_limit", "too_large"),
        ("j2k_siz_over_the_limit", "too_large"),
        ("pixel_data_short_of_the_image", "truncated"),
        ("no_pixel_data", "no_pixel_data"),
        ("two_frames", "multi_frame"),
    ],
)
def test_a_header_ingest_would_refuse_for_its_pixels_never_gets_success(
    receiver, tmp_path, build, reason
):
    """The receiver used to check eligibility only: a header whose Rows x Columns (or whose
    codestream's frame header) was already over MAX_PIXELS was answered Success."""
    from tests.pacs.hostile import radiograph_header, write_sparse_radiograph
    from tests.reliability.bombs import j2k_siz_bomb, jpeg_sof_bomb

    path = tmp_path / f"{build}.dcm"
    if build == "rows_columns_over_the_limit":
        sparse_cr(path, 20_000, 20_000, pixel_bytes=1024)
    elif build == "jpeg_sof_over_the_limit":
        jpeg_sof_bomb(path)
    elif build == "j2k_siz_over_the_limit":
        j2k_siz_bomb(path)
    elif build == "pixel_data_short_of_the_image":
        sparse_cr(path, 512, 512, pixel_bytes=1000)
    elif build == "no_pixel_data":
        ds = radiograph_header(64, 64)
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    else:
        write_sparse_radiograph(path, radiograph_header(64, 64, NumberOfFrames=2), 64 * 64 * 4)
    status = send_path(receiver, path)
    assert status == CANNOT_UNDERSTAND
    assert inbox_files(receiver) == []
    assert list(receiver.config.inbox.rglob("*.part")) == []
    assert list(receiver.config.inbox.rglob("*.inflated")) == []


def test_the_same_object_twice_is_kept_once(receiver, tmp_path):
    path = sparse_cr(tmp_path / "cr.dcm", 64, 64)
    assert send_path(receiver, path) == 0
    assert send_path(receiver, path) == 0  # safe: the same bytes are already in the inbox
    assert len(inbox_files(receiver)) == 1


def test_another_object_under_the_same_uid_never_replaces_the_first(receiver, tmp_path):
    from tests.pacs.hostile import radiograph_header, write_sparse_radiograph

    a = radiograph_header(64, 64, PatientID="PATIENT-A")
    b = radiograph_header(64, 64, PatientID="PATIENT-B")
    b.SOPInstanceUID = a.SOPInstanceUID
    assert send_path(receiver, write_sparse_radiograph(tmp_path / "a.dcm", a, 8192)) == 0
    first = (receiver.config.inbox / f"{a.SOPInstanceUID}.dcm").read_bytes()
    assert send_path(receiver, write_sparse_radiograph(tmp_path / "b.dcm", b, 8192)) == 0
    files = inbox_files(receiver)
    assert len(files) == 2
    assert (receiver.config.inbox / f"{a.SOPInstanceUID}.dcm").read_bytes() == first
    [beside] = [f for f in files if f.name != f"{a.SOPInstanceUID}.dcm"]
    assert beside.name.startswith(a.SOPInstanceUID + ".")
    assert pydicom.dcmread(beside, stop_before_pixels=True).PatientID == "PATIENT-B"


def test_received_files_get_the_configured_mode_and_the_callers_title(tmp_path):
    running = start(tmp_path, file_mode=0o600)
    try:
        path = sparse_cr(tmp_path / "cr.dcm", 64, 64)
        assert send_path(running, path, calling="CR_ROOM1") == 0
    finally:
        running.stop()
    [written] = inbox_files(running)
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    meta = pydicom.dcmread(written, stop_before_pixels=True).file_meta
    assert meta.SourceApplicationEntityTitle == "CR_ROOM1"
    assert not (tmp_path / "inbox" / ".cxr-receiving").exists() or not any(
        (tmp_path / "inbox" / ".cxr-receiving").iterdir()
    )


def test_received_objects_are_handed_on_once_written(tmp_path, small_grey):
    handed: list[Path] = []
    running = start(tmp_path)
    running.on_received = handed.append
    try:
        ds = radiograph_variant("native_8bit", small_grey)
        assert send(running, ds)[1].Status == 0  # type: ignore[union-attr]
        assert send(running, ds)[1].Status == 0  # type: ignore[union-attr]
    finally:
        running.stop()
    assert handed == [tmp_path / "inbox" / f"{ds.SOPInstanceUID}.dcm"]  # the duplicate: not
