"""Who may reach the DICOM node and what one peer may cost it: AE titles bound to hosts, the
loopback default, connection limits at accept, PDU deadlines and lengths, and DICOM TLS
with a throwaway CA (pynetdicom and dcmtk's ``storescu +tls`` as the peers).

Two hosts on one machine are two loopback addresses (127.0.0.1 and 127.0.0.2): the node
sees them as different peers, as it would two modalities on a LAN.
"""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE

from pacs.peers import PeerSpecError, parse_peers
from pacs.receiver import NetworkLimits, Receiver, ReceiverConfig, TLSFiles
from tests.pacs.hostile import (
    Dripper,
    bare_connections,
    echo,
    radiograph_header,
    send_file,
    write_sparse_radiograph,
)
from tests.pacs.tls_certs import make_authority
from tests.support import wait_until

NODE = "CXR_TEST_NODE"
STORESCU = shutil.which("storescu", path="/usr/bin:/usr/local/bin")
ECHOSCU = shutil.which("echoscu", path="/usr/bin:/usr/local/bin")


def start(tmp_path: Path, **overrides: object) -> Receiver:
    values: dict[str, object] = {
        "inbox": tmp_path / "inbox",
        "ae_title": NODE,
        "port": 0,
        "host": "127.0.0.1",
    }
    values.update(overrides)
    receiver = Receiver(ReceiverConfig(**values))  # type: ignore[arg-type]
    receiver.start()
    return receiver


@pytest.fixture
def cr_file(tmp_path: Path) -> Path:
    return write_sparse_radiograph(tmp_path / "cr.dcm", radiograph_header(64, 64), 64 * 64 * 2)


def received(receiver: Receiver) -> list[Path]:
    return [p for p in receiver.config.inbox.iterdir() if not p.name.startswith(".")]


# -- known peers --------------------------------------------------------------------------


def test_a_listed_title_from_another_host_is_refused(tmp_path: Path, cr_file: Path):
    """The allow-list used to check the calling AE title only, which anyone can claim: a
    host that is not the modality's, calling as the modality, got its film scored."""
    receiver = start(tmp_path, peers=parse_peers("MODALITY@127.0.0.1"))
    try:
        assert send_file(receiver.port, cr_file, called=NODE, calling="MODALITY") == 0
        # the same title from another host: disconnected at accept, nothing stored
        assert (
            send_file(receiver.port, cr_file, called=NODE, calling="MODALITY", bind="127.0.0.2")
            is None
        )
        # the right host under a title not bound to it: A-ASSOCIATE-RJ
        assert send_file(receiver.port, cr_file, called=NODE, calling="INTRUDER") is None
    finally:
        receiver.stop()
    assert len(received(receiver)) == 1


def test_a_title_bound_to_a_network_and_any_title_from_a_host(tmp_path: Path):
    receiver = start(tmp_path, peers=parse_peers("CR_ROOM@127.0.0.0/30, *@127.0.0.9"))
    try:
        port = receiver.port
        assert echo(port, called=NODE, calling="CR_ROOM", bind="127.0.0.2")[0]
        assert not echo(port, called=NODE, calling="OTHER", bind="127.0.0.2")[0]
        assert echo(port, called=NODE, calling="ANYTHING", bind="127.0.0.9")[0]
        assert not echo(port, called=NODE, calling="CR_ROOM", bind="127.0.0.5")[0]
    finally:
        receiver.stop()


def _lan_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


def test_by_default_only_this_machine_may_send(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """No CXR_LISTEN_PEERS: loopback callers only; the machine's own LAN address, as any
    other host on the network, is disconnected."""
    lan = _lan_address()
    if lan is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    receiver = start(tmp_path, host="0.0.0.0")
    caplog.set_level(logging.WARNING)
    try:
        assert echo(receiver.port, called=NODE)[0]
        assert not echo(receiver.port, called=NODE, bind=lan)[0]
    finally:
        receiver.stop()
    assert f"refused a connection from {lan}: not a known peer host" in caplog.text


def test_allowing_any_peer_is_said_loudly_at_start(tmp_path: Path, caplog):
    caplog.set_level(logging.WARNING)
    receiver = start(tmp_path, peers=parse_peers("", allow_any=True))
    try:
        assert echo(receiver.port, called=NODE, calling="WHOEVER", bind="127.0.0.7")[0]
    finally:
        receiver.stop()
    [warning] = [r for r in caplog.records if "ANY host under ANY AE title" in r.getMessage()]
    assert warning.levelno == logging.WARNING


@pytest.mark.parametrize(
    "spec", ["MODALITY", "@10.0.0.1", "WAY_TOO_LONG_AE_TITLE_X@10.0.0.1", "A@no-such-host.invalid"]
)
def test_a_peer_that_cannot_be_one_is_refused_at_start(spec: str):
    with pytest.raises(PeerSpecError):
        parse_peers(spec)


# -- what one peer may cost -----------------------------------------------------------------


def test_connections_over_the_per_peer_limit_are_closed_at_accept(tmp_path: Path):
    limits = NetworkLimits(max_associations=6, max_associations_per_peer=2)
    receiver = start(tmp_path, peers=parse_peers("*@127.0.0.0/8"), limits=limits)
    try:
        with bare_connections(receiver.port, 20, bind="127.0.0.2") as held:
            wait_until(
                lambda: (
                    receiver.server is not None
                    and receiver.server.open_connections().get("127.0.0.2") == 2
                ),
                10,
                "two connections held",
            )
            closed = sum(1 for sock in held if _closed_by_peer(sock))
            assert closed == 18
            answered, seconds = echo(receiver.port, called=NODE)  # another host: in at once
            assert answered and seconds < 2.0
    finally:
        receiver.stop()


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(2)
    try:
        return sock.recv(1) == b""
    except (TimeoutError, OSError):
        return False


def test_a_pdu_dripped_a_byte_at_a_time_is_cut_off_at_its_deadline(tmp_path: Path):
    receiver = start(tmp_path, limits=NetworkLimits(pdu_timeout_s=2.0))
    dripper = Dripper(receiver.port, NODE, interval_s=0.3).start()
    try:
        assert dripper.established
        wait_until(lambda: dripper.cut_off_after is not None, 15, "the dripper cut off")
    finally:
        dripper.stop()
        receiver.stop()
    assert dripper.cut_off_after is not None and dripper.cut_off_after < 2.0 + 2.0


def test_a_pdu_claiming_more_than_the_maximum_length_is_refused_unread(tmp_path: Path):
    """A P-DATA-TF header saying 4 GiB: the connection is dropped after the 6-byte header,
    nothing of the body is read or allocated (pynetdicom alone would read it whole)."""
    receiver = start(tmp_path)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title=NODE)
    try:
        assert assoc.is_established
        raw = assoc.dul.socket.socket  # type: ignore[union-attr]
        raw.sendall(struct.pack(">BBL", 0x04, 0, 0xFFFFFFF0))
        started = time.monotonic()
        try:
            for _ in range(64):  # keep writing: the node must not be reading it
                raw.sendall(b"\0" * 65536)
        except OSError:
            pass
        wait_until(lambda: not assoc.is_established, 10, "the association dropped")
        assert time.monotonic() - started < 10
    finally:
        if assoc.is_established:
            assoc.abort()
        receiver.stop()


def test_a_silent_connection_is_closed_after_the_acse_timeout(tmp_path: Path):
    receiver = start(tmp_path, acse_timeout_s=1.0)
    try:
        with bare_connections(receiver.port, 1, bind="127.0.0.1") as [sock]:
            started = time.monotonic()
            sock.settimeout(10)
            assert sock.recv(1) == b""
            assert time.monotonic() - started < 5
    finally:
        receiver.stop()


# -- DICOM TLS --------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path):  # type: ignore[no-untyped-def]
    authority = make_authority(tmp_path / "pki")
    return (
        authority,
        authority.issue("node", server=True),
        authority.issue("modality", server=False),
    )


@pytest.fixture
def tls_receiver(tmp_path: Path, pki) -> Iterator[Receiver]:  # type: ignore[no-untyped-def]
    authority, server, _ = pki
    receiver = start(tmp_path, tls=TLSFiles(server.certificate, server.key, authority.certificate))
    yield receiver
    receiver.stop()


def _tls_echo(receiver: Receiver, context: ssl.SSLContext | None) -> bool:
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.network_timeout = 5
    ae.add_requested_context("1.2.840.10008.1.1")
    kwargs = {"tls_args": (context, "127.0.0.1")} if context else {}
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title=NODE, **kwargs)  # type: ignore[arg-type]
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return status.get("Status") == 0


def _client_context(pki, with_certificate: bool) -> ssl.SSLContext:  # type: ignore[no-untyped-def]
    authority, _, client = pki
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(authority.certificate))
    if with_certificate:
        context.load_cert_chain(client.certificate, client.key)
    return context


def test_tls_with_a_client_certificate_is_served(tls_receiver: Receiver, pki):
    assert _tls_echo(tls_receiver, _client_context(pki, with_certificate=True))


def test_tls_refuses_plain_dicom_and_clients_without_a_certificate(tls_receiver: Receiver, pki):
    assert not _tls_echo(tls_receiver, None)
    assert not _tls_echo(tls_receiver, _client_context(pki, with_certificate=False))
    assert _tls_echo(tls_receiver, _client_context(pki, with_certificate=True))


def test_a_stalled_tls_handshake_does_not_hold_up_other_peers(tls_receiver: Receiver, pki):
    """pynetdicom performs the TLS handshake in the thread that accepts every connection: a
    peer that connects and says nothing would stop the node. Here it waits in its own."""
    with bare_connections(tls_receiver.port, 3, bind="127.0.0.1"):
        started = time.monotonic()
        assert _tls_echo(tls_receiver, _client_context(pki, with_certificate=True))
        assert time.monotonic() - started < 2.0


@pytest.mark.skipif(STORESCU is None or ECHOSCU is None, reason="dcmtk not installed")
def test_dcmtk_storescu_over_tls(tls_receiver: Receiver, pki, cr_file: Path):
    authority, _, client = pki
    tls = ["+tls", str(client.key), str(client.certificate), "+cf", str(authority.certificate)]
    target = ["-aet", "MODALITY", "-aec", NODE, "127.0.0.1", str(tls_receiver.port)]
    echoed = subprocess.run([str(ECHOSCU), *tls, *target], capture_output=True, text=True)
    assert echoed.returncode == 0, echoed.stdout + echoed.stderr
    stored = subprocess.run(
        [str(STORESCU), *tls, *target, str(cr_file)], capture_output=True, text=True
    )
    assert stored.returncode == 0, stored.stdout + stored.stderr
    assert len(received(tls_receiver)) == 1
    plain = subprocess.run([str(STORESCU), *target, str(cr_file)], capture_output=True, text=True)
    assert plain.returncode != 0


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_command_set_that_cannot_be_decoded_ends_only_its_association(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """Garbage as the last fragment of a command set: pynetdicom's decoder raises inside its
    reactor thread, which would die outside its error handling. The association is aborted
    with a reason, and the node serves on."""
    caplog.set_level(logging.WARNING)
    receiver = start(tmp_path)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title=NODE)
    try:
        assert assoc.is_established
        raw = assoc.dul.socket.socket  # type: ignore[union-attr]
        garbage = b"\x03" + b"\xff" * 64  # control header: command, last fragment
        pdv = struct.pack(">LB", len(garbage) + 1, 1) + garbage
        raw.sendall(struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv)
        wait_until(lambda: not assoc.is_established, 10, "the association ended")
        assert echo(receiver.port, called=NODE)[0]  # the node serves on
    finally:
        if assoc.is_established:
            assoc.abort()
        receiver.stop()
    assert "aborted: a message that cannot be decoded" in caplog.text
