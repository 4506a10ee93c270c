"""Files that hold patient data are the service account's alone, and carry no patient name.

Issue 20: the archive, quarantine, sidecars, outbox, overlays and the SQLite worklist were
created 0644 (readable by every account on the host), and archived and quarantined files
kept the sender's file name, where patient names are found. A real ``cxr-triage run`` on
files named after a patient: every file it creates is 0600 and every folder 0700 (the
default ``CXR_UMASK`` 0077), and the name is only in the worklist row.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from db.models import Status
from tests.corpus import cr_dicom, dataset_jpegs, truncated_copy
from tests.processes import CLI, cli, rows, service_env

PATIENT = "DOE^JANE"


def _modes(root: Path) -> dict[Path, int]:
    return {
        path: stat.S_IMODE(path.lstat().st_mode)
        for path in [root, *root.rglob("*")]
        if not path.is_symlink()
    }


@pytest.mark.slow
@pytest.mark.tf
def test_run_creates_every_file_0600_named_by_hash(tmp_path: Path, model_dir: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    jpegs = dataset_jpegs(2)
    scored = cr_dicom(jpegs[0], tmp_path / f"{PATIENT}_chest.dcm", PatientName=PATIENT)
    scored.chmod(0o644)
    other = cr_dicom(jpegs[1], tmp_path / "other.dcm", PatientName=PATIENT)
    truncated = truncated_copy(other, tmp_path / f"{PATIENT}_again.dcm")
    truncated.chmod(0o644)
    for source in (scored, truncated):
        os.replace(source, inbox / source.name)  # as a sender's rename, mode 0644
    env = service_env(tmp_path, f"sqlite:///{tmp_path / 'data' / 'worklist.sqlite3'}", None)
    env.pop("CXR_INBOX")
    env["CXR_MODEL_PATH"] = str(model_dir)
    result = subprocess.run(
        [*CLI, "run", str(inbox), "--exit-when-idle"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = {r.source_name: r for r in rows(f"sqlite:///{tmp_path / 'data' / 'worklist.sqlite3'}")}
    assert set(found) == {scored.name, truncated.name}, (found, result.stdout[-2000:])
    assert found[scored.name].status == Status.DONE
    assert found[truncated.name].status == Status.REJECTED
    outbox = tmp_path / "data" / "outbox"
    overlays = tmp_path / "data" / "overlays"
    assert list(outbox.rglob("*.dcm")) and list(overlays.rglob("*.png"))
    created: dict[Path, int] = {}
    for folder in (tmp_path / "archive", tmp_path / "quarantine", outbox, overlays):
        created.update(_modes(folder))
    created.update(
        {p: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "data").glob("worklist.sqlite3*")}
    )
    wrong = {str(p): oct(m) for p, m in created.items() if m != (0o700 if p.is_dir() else 0o600)}
    assert wrong == {}
    assert any(p.name.endswith(".json") for p in created)  # the sidecar is among them
    for path in created:
        assert "DOE" not in str(path.relative_to(tmp_path)), path
        if path.suffix == ".json":
            assert "DOE" not in path.read_text() and "source_name" not in path.read_text()


def test_the_umask_is_a_documented_setting(tmp_path: Path) -> None:
    """``CXR_UMASK=0027`` lets a service group read what the services write."""
    url = f"sqlite:///{tmp_path / 'group' / 'worklist.sqlite3'}"
    cli(["db", "upgrade"], service_env(tmp_path, url, None, CXR_UMASK="0027"))
    assert stat.S_IMODE((tmp_path / "group" / "worklist.sqlite3").stat().st_mode) == 0o640
    url = f"sqlite:///{tmp_path / 'default' / 'worklist.sqlite3'}"
    cli(["db", "upgrade"], service_env(tmp_path, url, None))
    assert stat.S_IMODE((tmp_path / "default" / "worklist.sqlite3").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "default").stat().st_mode) == 0o700
    bad = subprocess.run(
        [*CLI, "db", "upgrade"],
        env=service_env(tmp_path, url, None, CXR_UMASK="0999"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode != 0 and "umask" in (bad.stderr + bad.stdout).lower()
