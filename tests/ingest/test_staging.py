"""Staging a claimed file: the inode is taken, nothing else is, and nothing is overwritten."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.staging import Fingerprint, stage, staged_path, staging_dir, unstage


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def test_stage_takes_the_inode_and_a_second_stage_finds_it(inbox: Path) -> None:
    source = inbox / "a" / "scan.dcm"
    source.parent.mkdir()
    source.write_bytes(b"patient A")
    before = Fingerprint.of(source)
    staged = stage(source, staged_path(inbox, 7))
    assert staged == staging_dir(inbox) / "7" and staged.read_bytes() == b"patient A"
    assert Fingerprint.of(staged) == before, "renamed, not copied"
    assert not source.exists()
    source.write_bytes(b"patient B")  # the sender re-sends under the same name
    assert stage(source, staged) == staged  # a redelivery: the first attempt's file
    assert staged.read_bytes() == b"patient A" and source.read_bytes() == b"patient B"
    assert staging_dir(inbox).stat().st_mode & 0o077 == 0, "private to the service"


def test_a_missing_file_or_a_folder_under_its_name_is_not_staged(inbox: Path) -> None:
    with pytest.raises(FileNotFoundError):
        stage(inbox / "gone.dcm", staged_path(inbox, 1))
    folder = inbox / "scan.dcm"  # a folder took the name: it may hold other arrivals
    folder.mkdir()
    (folder / "other.dcm").write_bytes(b"someone else")
    with pytest.raises(FileNotFoundError):
        stage(folder, staged_path(inbox, 2))
    assert (folder / "other.dcm").read_bytes() == b"someone else"
    assert not staged_path(inbox, 2).exists()


def test_a_symlink_is_staged_as_a_link_and_its_target_untouched(
    inbox: Path, tmp_path: Path
) -> None:
    target = tmp_path / "outside.dcm"
    target.write_bytes(b"not the inbox's")
    (inbox / "link.dcm").symlink_to(target)
    staged = stage(inbox / "link.dcm", staged_path(inbox, 3))
    assert staged.is_symlink() and os.readlink(staged) == str(target)
    assert target.read_bytes() == b"not the inbox's"


def test_unstage_puts_the_file_back_without_overwriting_a_new_arrival(inbox: Path) -> None:
    source = inbox / "scan.dcm"
    source.write_bytes(b"patient B")
    staged = stage(source, staged_path(inbox, 4))
    assert unstage(staged, source) == source and source.read_bytes() == b"patient B"
    staged = stage(source, staged_path(inbox, 5))
    source.write_bytes(b"patient C")  # yet another file arrived under the name meanwhile
    back = unstage(staged, source)
    assert back == inbox / "scan-1.dcm" and back.read_bytes() == b"patient B"
    assert source.read_bytes() == b"patient C" and not staged.exists()
