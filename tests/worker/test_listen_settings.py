"""The receiver's settings and the inbox it shares with the watcher (issues 19, 20, 21):
``listen`` on its own receives where ``run``/``watch`` watch, the old title-only allow-list
is refused with the way out, TLS comes as a pair, and the umask makes files private."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from pacs.receiving import RECEIVING_FOLDER
from tests.pacs.hostile import echo, radiograph_header, write_sparse_radiograph
from tests.processes import CLI, running
from tests.support import free_port, wait_until
from worker import service
from worker.settings import Settings

STORESCU = shutil.which("storescu", path="/usr/bin:/usr/local/bin")


def test_the_receiving_folder_name_is_the_receivers(tmp_path: Path) -> None:
    assert service.RECEIVING_FOLDER == RECEIVING_FOLDER  # is_idle looks into it


def test_listen_receives_where_the_last_watcher_watched(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    assert service.receiving_inbox(settings) == settings.inbox  # nothing recorded yet
    watched = tmp_path / "inbox"
    watched.mkdir()
    service.record_watched_inbox(Settings(data_dir=tmp_path / "data", inbox=watched))
    assert service.receiving_inbox(settings) == watched
    explicit = Settings(data_dir=tmp_path / "data", inbox=tmp_path / "elsewhere")
    assert service.receiving_inbox(explicit) == tmp_path / "elsewhere"  # CXR_INBOX wins
    shutil.rmtree(watched)
    assert service.receiving_inbox(settings) == settings.inbox  # gone: the default


def test_the_title_only_allow_list_is_refused_with_the_way_out(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, listen_allowed_ae_titles="MODALITY")
    with pytest.raises(ValueError, match="CXR_LISTEN_PEERS"):
        service.build_receiver(settings, tmp_path / "inbox")


def test_tls_settings_come_as_a_pair(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="listen_tls_certificate and listen_tls_key"):
        Settings(data_dir=tmp_path, listen_tls_certificate=tmp_path / "node.pem")
    with pytest.raises(ValueError, match="listen_tls_ca needs"):
        Settings(data_dir=tmp_path, listen_tls_ca=tmp_path / "ca.pem")


def test_the_umask_is_octal_and_makes_files_private(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).file_mode == 0o600
    assert Settings(data_dir=tmp_path, umask="027").file_mode == 0o640
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, umask="999")


def test_the_receiver_is_built_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        listen_peers="CR_ROOM1@10.20.0.15, *@10.30.0.0/24",
        listen_max_object_bytes=64 * 1024 * 1024,
        listen_pdu_timeout_s=7,
        listen_max_associations=8,
        listen_max_associations_per_peer=2,
        umask="077",
    )
    config = service.build_receiver(settings, tmp_path / "inbox", port=1104).config
    assert config.port == 1104 and config.ae_title == "CXR_TRIAGE"
    assert config.peers.admits("CR_ROOM1", "10.20.0.15")
    assert not config.peers.admits("CR_ROOM1", "10.20.0.16")
    assert config.peers.admits("ANY", "10.30.0.200")
    assert config.max_object_bytes == 64 * 1024 * 1024
    assert (config.limits.pdu_timeout_s, config.limits.max_associations) == (7, 8)
    assert config.file_mode == 0o600


@pytest.mark.skipif(STORESCU is None, reason="dcmtk not installed")
def test_listen_on_its_own_receives_into_the_inbox_watch_watches(tmp_path: Path) -> None:
    """The README's ``watch ./inbox`` (or ``run ./inbox``) in one terminal and a bare
    ``listen`` in another: the C-STORE lands in ./inbox, where it is watched. Before, it
    went to <data_dir>/inbox and was never scored."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(
        CXR_DATA_DIR=str(tmp_path / "data"),
        CXR_DATABASE_URL=f"sqlite:///{tmp_path / 'w.sqlite3'}",
        CXR_LISTEN_PORT=str(port),
        CXR_LISTEN_HOST="127.0.0.1",
        PYTHONUNBUFFERED="1",
    )
    subprocess.run([*CLI, "db", "upgrade"], env=env, check=True, capture_output=True)
    path = write_sparse_radiograph(tmp_path / "cr.dcm", radiograph_header(64, 64), 8192)
    logs = [tmp_path / "watch.log", tmp_path / "listen.log"]
    with running(["watch", str(inbox)], env, logs[0]):
        wait_until(lambda: (tmp_path / "data" / "watched-inbox").exists(), 60, "watch", logs)
        with running(["listen"], env, logs[1]):
            wait_until(lambda: echo(port, called="CXR_TRIAGE")[0], 60, "listen", logs)
            stored = subprocess.run(
                [str(STORESCU), "-aec", "CXR_TRIAGE", "127.0.0.1", str(port), str(path)],
                capture_output=True,
                text=True,
            )
            assert stored.returncode == 0, stored.stdout + stored.stderr
            # watched, admitted: a row for it (the file waits there for a worker)
            wait_until(lambda: "row 1 admitted" in logs[0].read_text(), 30, "admitted", logs)
    assert f"into {inbox}" in logs[1].read_text()
    assert not (tmp_path / "data" / "inbox").exists() or not any(
        p for p in (tmp_path / "data" / "inbox").iterdir() if not p.name.startswith(".")
    )
    [received] = [p for p in inbox.iterdir() if p.suffix == ".dcm"]
    assert stat.S_IMODE(received.stat().st_mode) == 0o600


def test_compose_publishes_the_dicom_port_only_where_the_admin_says() -> None:
    """The compose file published 11112 on every interface with an empty allow-list: any
    host on the LAN could add cases. Now 127.0.0.1 unless CXR_LISTEN_PUBLISH names an
    address, and the peers come from CXR_LISTEN_PEERS (empty: the container only)."""
    import yaml

    compose = Path(__file__).resolve().parents[2] / "docker-compose.yml"
    listen = yaml.safe_load(compose.read_text())["services"]["listen"]
    [port] = listen["ports"]
    assert port == "${CXR_LISTEN_PUBLISH:-127.0.0.1}:11112:11112"
    environment = listen["environment"]
    assert environment["CXR_LISTEN_PEERS"] == "${CXR_LISTEN_PEERS:-}"
    assert "CXR_LISTEN_ALLOWED_AE_TITLES" not in environment
    assert "CXR_LISTEN_ALLOW_ANY_PEER" not in environment  # never by default
    for key in ("CXR_LISTEN_TLS_CERTIFICATE", "CXR_LISTEN_TLS_KEY", "CXR_LISTEN_TLS_CA"):
        assert environment[key] == "${" + key + ":-}"
