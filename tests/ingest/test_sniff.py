"""Format detection by content, never by the file name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest import IngestError, Reason, SourceKind, file_sha256, read_header, read_image
from ingest.sniff import sniff_bytes


def test_dicom_magic_at_byte_128_is_dicom() -> None:
    sniffed = sniff_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00")
    assert sniffed.kind is SourceKind.DICOM and sniffed.has_preamble


def test_raw_dataset_starting_with_group_0008_is_dicom_without_preamble() -> None:
    head = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + b"\x00" * 120
    sniffed = sniff_bytes(head)
    assert sniffed.kind is SourceKind.DICOM and not sniffed.has_preamble


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\xff\xd8\xff\xe0" + b"\x00" * 20, SourceKind.JPEG),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, SourceKind.PNG),
    ],
)
def test_raster_magic_numbers(head: bytes, kind: SourceKind) -> None:
    assert sniff_bytes(head).kind is kind


def test_a_png_named_dcm_is_read_as_png(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "looks_like.dcm"
    Image.new("L", (8, 8), 7).save(path, format="PNG")
    assert read_header(path).kind is SourceKind.PNG


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", Reason.EMPTY_FILE), (b"%PDF-1.7 dose report", Reason.NOT_AN_IMAGE)],
)
def test_unreadable_files_are_named(tmp_path: Path, content: bytes, reason: Reason) -> None:
    path = tmp_path / "f.dcm"
    path.write_bytes(content)
    with pytest.raises(IngestError) as caught:
        read_image(path)
    assert caught.value.reason is reason


def test_directory_and_fifo_are_unsafe_paths_not_hangs(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo):
        with pytest.raises(IngestError) as caught:
            read_header(path)
        assert caught.value.reason is Reason.UNSAFE_PATH


def test_file_sha256_streams_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"a" * (3 * 1024 * 1024 + 5))
    import hashlib

    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_sha256(path, chunk_bytes=7) == file_sha256(path)
