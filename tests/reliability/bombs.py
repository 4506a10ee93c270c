"""Hostile files that are tiny on disk and huge once decoded, and a bounded child to read them.

Each builder writes a real file; :func:`read_bounded` reads it in a child Python under
``prlimit --as`` (an address-space cap, so a bomb the guard misses fails fast instead of
swapping the machine) and reports the reason, the wall time and the child's peak RSS.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit

from tests.datasets import REPO
from tests.ingest.dicom_factory import base_dataset, encapsulated

#: The address-space cap of the child: Python with numpy and pydicom needs about 200 MiB.
CHILD_ADDRESS_SPACE = 1024**3

_CHILD = """
import json, sys, time
from pathlib import Path

def peak_rss_kib():
    # VmHWM belongs to this process image; ru_maxrss would carry the forking parent's peak
    # across exec (a large pytest process reads as a large child).
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0

from ingest import IngestError, read_header, read_image
read = {
    "header": read_header,
    "image": read_image,
    "image-reduced": lambda path: read_image(path, min_side=384),  # what the worker reads
}[sys.argv[1]]
started = time.monotonic()
try:
    read(Path(sys.argv[2]))
    reason, message = None, ""
except IngestError as error:
    reason, message = error.reason.value, error.message
print(json.dumps({
    "reason": reason,
    "message": message,
    "seconds": time.monotonic() - started,
    "peak_rss_mib": peak_rss_kib() / 1024,
}))
"""


@dataclass(frozen=True)
class BoundedRead:
    returncode: int
    reason: str | None
    message: str
    seconds: float
    peak_rss_mib: float
    stderr: str


def read_bounded(
    path: Path, what: str = "image", address_space: int = CHILD_ADDRESS_SPACE, timeout_s: int = 120
) -> BoundedRead:
    """Run ``read_header`` or ``read_image`` on ``path`` in a child under ``prlimit --as``."""
    result = subprocess.run(
        ["prlimit", f"--as={address_space}", sys.executable, "-c", _CHILD, what, str(path)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1"},
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        return BoundedRead(result.returncode, None, "", 0.0, 0.0, result.stderr[-3000:])
    report = json.loads(lines[-1])
    return BoundedRead(result.returncode, stderr=result.stderr[-3000:], **report)


def _element(group: int, element: int, vr: bytes, length: int) -> bytes:
    """An explicit VR little endian element header with a 4-byte length (OB/OW/UN...)."""
    return struct.pack("<HH", group, element) + vr + b"\0\0" + struct.pack("<I", length)


def deflate_bomb(path: Path, inflated_bytes: int = 1024**3) -> Path:
    """A Deflated Explicit VR Little Endian CR whose private OB element inflates to
    ``inflated_bytes`` of zeros, before a small valid Pixel Data: about 1 MB per GB."""
    ds = base_dataset(64, 64)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    header = Dataset()
    header.update(ds)
    header.SamplesPerPixel = 1
    header.PhotometricInterpretation = "MONOCHROME2"
    header.BitsAllocated = header.BitsStored = 8
    header.HighBit = 7
    header.PixelRepresentation = 0
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, header)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with path.open("wb") as out:
        out.write(b"\0" * 128 + b"DICM")
        meta_buffer = DicomBytesIO()
        meta_buffer.is_little_endian, meta_buffer.is_implicit_VR = True, False
        write_file_meta_info(meta_buffer, meta, enforce_standard=True)
        out.write(meta_buffer.getvalue())
        out.write(deflater.compress(buffer.getvalue()))
        out.write(deflater.compress(struct.pack("<HH", 0x0019, 0x0010) + b"LO\x04\0" + b"BOMB"))
        out.write(deflater.compress(_element(0x0019, 0x1000, b"OB", inflated_bytes)))
        zeros = b"\0" * (16 * 1024**2)
        left = inflated_bytes
        while left:
            step = min(left, len(zeros))
            out.write(deflater.compress(zeros[:step]))
            left -= step
        pixels = bytes(range(64)) * 64
        out.write(deflater.compress(_element(0x7FE0, 0x0010, b"OB", len(pixels)) + pixels))
        out.write(deflater.flush())
    return path


def jpeg_sof_bomb(path: Path, side: int = 65_000) -> Path:
    """A baseline JPEG CR DICOM whose header says 64 x 64 and whose SOF says ``side``^2."""
    return _encapsulated_cr(path, _jpeg_stream(side), JPEGBaseline8Bit, photometric="MONOCHROME2")


def _jpeg_stream(side: int) -> bytes:
    """A real 64 x 64 baseline JPEG with its SOF0's lines and samples per line set to ``side``."""
    import io

    import numpy as np
    from PIL import Image

    with io.BytesIO() as encoded:
        ramp = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
        Image.fromarray(ramp, mode="L").save(encoded, format="JPEG", quality=90)
        stream = bytearray(encoded.getvalue())
    at = stream.index(b"\xff\xc0")  # SOF0: length, precision, lines (Y), samples per line (X)
    stream[at + 5 : at + 9] = struct.pack(">HH", side, side)
    return bytes(stream)


#: Bytes put in front of a bomb SOF, each of which libjpeg and Pillow read past to it: what
#: the guard once stopped at (issue 23: stray bytes took 741 MiB and 3 s under a 1 GiB cap).
HIDING_PLACES = {
    "stray bytes": b"\x00\x12",
    "a stuffed FF00 pair": b"\xff\x00",
    "fill bytes": b"\xff" * 7,
    "a COM of length 0": b"\xff\xfe\x00\x00",
    "an APP0 of length 1": b"\xff\xe0\x00\x01",
    "a restart marker": b"\xff\xd3",
}


def jpeg_hidden_sof_bomb(path: Path, hiding: bytes, side: int = 12_000) -> Path:
    """:func:`jpeg_sof_bomb` with ``hiding`` (see :data:`HIDING_PLACES`) right before the SOF."""
    stream = _jpeg_stream(side)
    at = stream.index(b"\xff\xc0")
    stream = stream[:at] + hiding + stream[at:]
    return _encapsulated_cr(path, stream, JPEGBaseline8Bit, photometric="MONOCHROME2")


def jpeg_second_sof_bomb(path: Path, side: int = 12_000) -> Path:
    """A baseline JPEG CR DICOM (header 64 x 64) whose real 64 x 64 SOF is followed, before
    the scan, by a second SOF saying ``side``^2: libjpeg sizes by the first, Pillow by the
    last."""
    frame = _jpeg_stream(64)
    at = frame.index(b"\xff\xc0")
    (length,) = struct.unpack_from(">H", frame, at + 2)
    second = bytearray(frame[at : at + 2 + length])
    second[5:9] = struct.pack(">HH", side, side)
    stream = frame[: at + 2 + length] + bytes(second) + frame[at + 2 + length :]
    return _encapsulated_cr(path, stream, JPEGBaseline8Bit, photometric="MONOCHROME2")


def j2k_siz_bomb(path: Path, side: int = 11_000) -> Path:
    """A JPEG 2000 CR DICOM (header 64 x 64) whose SIZ marker says ``side`` x ``side`` in
    one tile: a real 64 x 64 codestream with its image and tile size rewritten."""
    import imagecodecs
    import numpy as np

    ramp = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
    stream = _siz_resized(imagecodecs.jpeg2k_encode(ramp, level=0, codecformat="J2K"), side)
    return _encapsulated_cr(path, stream, JPEG2000Lossless, photometric="MONOCHROME2")


def jp2_with_decoy(path: Path, decoy_side: int, real_side: int) -> Path:
    """A JPEG 2000 CR DICOM (header 64 x 64) whose frame is a JP2 file: an XML box right
    after ``ftyp`` holds a decoy raw codestream whose SIZ says ``decoy_side`` squared, and
    the ``jp2c`` box the decoder reads holds the real 64 x 64 codestream with its SIZ
    rewritten to ``real_side`` squared (64: left as encoded)."""
    import imagecodecs
    import numpy as np

    ramp = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
    decoy = _siz_resized(imagecodecs.jpeg2k_encode(ramp, level=0, codecformat="J2K"), decoy_side)
    jp2 = bytearray(imagecodecs.jpeg2k_encode(ramp, level=0, codecformat="JP2"))
    real = jp2.index(b"jp2c") + 4  # the encoder writes one jp2c box, after jp2h
    jp2[real:] = _siz_resized(bytes(jp2[real:]), real_side)
    (ftyp_length,) = struct.unpack_from(">I", jp2, 12)  # after the 12-byte signature box
    at = 12 + ftyp_length
    xml = struct.pack(">I4s", 8 + len(decoy), b"xml ") + decoy
    frame = bytes(jp2[:at]) + xml + bytes(jp2[at:])
    return _encapsulated_cr(path, frame, JPEG2000Lossless, photometric="MONOCHROME2")


def _siz_resized(stream: bytes, side: int) -> bytes:
    """A raw codestream with its SIZ image and one-tile size set to ``side`` x ``side``."""
    if side == 64:
        return stream
    out = bytearray(stream)
    at = out.index(b"\xff\x4f\xff\x51") + 2  # SIZ: FF51 Lsiz Rsiz Xsiz Ysiz ...
    struct.pack_into(">II", out, at + 6, side, side)  # Xsiz, Ysiz
    struct.pack_into(">II", out, at + 22, side, side)  # XTsiz, YTsiz: one tile
    return bytes(out)


def _encapsulated_cr(path: Path, stream: bytes, uid: object, photometric: str) -> Path:
    from pydicom.uid import UID

    ds = base_dataset(64, 64)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    encapsulated(ds, stream, UID(str(uid)))
    ds.save_as(path, enforce_file_format=True)
    return path
