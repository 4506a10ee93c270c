"""Filing originals: moved, never deleted, never overwritten, across filesystems too."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.filing import (
    Sidecar,
    archive_destination,
    move_into_place,
    process_umask,
    quarantine_destination,
    quarantine_file,
    sidecar_path,
)

SHA = "ab" * 32


def test_archive_path_is_dated_and_named_by_the_hash(tmp_path: Path) -> None:
    when = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)
    dest = archive_destination(tmp_path, when, SHA, "study/img.dcm")
    assert dest == tmp_path / "2026/01/31" / f"{SHA[:16]}.dcm"


@pytest.mark.parametrize(
    ("name", "extension"),
    [
        ("DOE^JOHN_19790412_chest.dcm", ".dcm"),
        ("Smith, Anna - CXR.JPEG", ".jpeg"),
        ("no extension at all", ""),
        ("name.with a space", ""),
        ("evil.dcm\x1b[2J", ""),
        ("x.toolongextension", ""),
        (".hidden", ""),
    ],
)
def test_filed_names_keep_nothing_of_the_senders_name_but_a_short_extension(
    tmp_path: Path, name: str, extension: str
) -> None:
    """Patient names are found in file names: archive and quarantine names carried the
    sender's name (issue 20). Only the row keeps it now."""
    when = datetime(2026, 1, 31, tzinfo=UTC)
    archived = archive_destination(tmp_path, when, SHA, f"inbox/{name}")
    quarantined = quarantine_destination(tmp_path, "truncated", SHA, name)
    assert archived.name == quarantined.name == f"{SHA[:16]}{extension}"


def test_a_sidecar_holds_no_file_name(tmp_path: Path) -> None:
    source = tmp_path / "DOE^JOHN.dcm"
    source.write_bytes(b"bad")
    dest = quarantine_destination(tmp_path / "q", "truncated", SHA, source.name)
    final = quarantine_file(source, dest, Sidecar("truncated", "ends early", file_sha256=SHA))
    assert "DOE" not in final.name
    written = sidecar_path(final).read_text()
    assert "source_name" not in written and "DOE" not in written
    assert json.loads(written)["file_sha256"] == SHA
    with pytest.raises(TypeError):  # positional fields after the detail: never mistaken
        Sidecar("truncated", "ends early", "DOE^JOHN.dcm")  # type: ignore[misc]


def test_filed_files_get_the_process_mode_not_the_senders(tmp_path: Path) -> None:
    """A renamed file kept its mode on the share (0644); filed, it gets 0666 less the
    process's umask (0600 with the default CXR_UMASK of 0077)."""
    previous = os.umask(0o077)
    try:
        for number, folder in enumerate((tmp_path, Path("/dev/shm"))):
            source = folder / f"cxr-mode-{tmp_path.name}-{number}.dcm"
            source.write_bytes(b"payload")
            source.chmod(0o644)
            final = move_into_place(source, tmp_path / "archive" / f"{number}.dcm")
            assert stat.S_IMODE(final.stat().st_mode) == 0o600, folder
            dest = quarantine_destination(tmp_path / "q", "corrupt", SHA, "x.dcm")
            other = tmp_path / f"other-{number}.dcm"
            other.write_bytes(b"x")
            other.chmod(0o644)
            quarantined = quarantine_file(other, dest, Sidecar("corrupt", None, file_sha256=SHA))
            assert stat.S_IMODE(quarantined.stat().st_mode) == 0o600
            assert stat.S_IMODE(sidecar_path(quarantined).stat().st_mode) == 0o600
        assert process_umask() == 0o077
        os.umask(0o027)
        assert process_umask() == 0o027
    finally:
        os.umask(previous)


def test_a_taken_name_gets_a_suffix_and_nothing_is_overwritten(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "a.dcm"
    dest.parent.mkdir()
    dest.write_bytes(b"first")
    source = tmp_path / "a.dcm"
    source.write_bytes(b"second")
    final = move_into_place(source, dest)
    assert final == tmp_path / "out" / "a-1.dcm"
    assert dest.read_bytes() == b"first" and final.read_bytes() == b"second"
    assert not source.exists()


def test_quarantine_writes_a_sidecar_beside_the_file(tmp_path: Path) -> None:
    source = tmp_path / "x.dcm"
    source.write_bytes(b"bad")
    dest = quarantine_destination(tmp_path / "q", "truncated", SHA, "x.dcm")
    sidecar = Sidecar("truncated", "The file ends early.", file_sha256=SHA, worklist_id=7)
    final = quarantine_file(source, dest, sidecar)
    assert final.parent == tmp_path / "q" / "truncated"
    written = json.loads(sidecar_path(final).read_text())
    assert written["worklist_id"] == 7 and written["reason"] == "truncated"
    assert written["duplicate_of_worklist_id"] is None  # every key, in every sidecar
    assert datetime.fromisoformat(written["quarantined_at"]).tzinfo is not None
    assert final.read_bytes() == b"bad" and not source.exists()


def test_reasons_cannot_escape_the_quarantine(tmp_path: Path) -> None:
    for reason in ("", "../x", ".hidden"):
        with pytest.raises(ValueError):
            quarantine_destination(tmp_path, reason, SHA, "x")


def test_a_move_across_filesystems_copies_then_removes(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem on this machine")
    source = other / f"cxr-test-{tmp_path.name}.dcm"
    source.write_bytes(b"payload")
    final = move_into_place(source, tmp_path / "archive" / "x.dcm")
    assert final.read_bytes() == b"payload" and not source.exists()
    assert not list((tmp_path / "archive").glob(".*"))


def test_a_symlink_is_moved_as_a_link_and_never_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the inbox")
    link = tmp_path / "link.dcm"
    link.symlink_to(secret)
    final = move_into_place(link, tmp_path / "q" / "link.dcm")
    assert final.is_symlink() and secret.read_text() == "outside the inbox"
