"""Time and peak memory of refusing each input bomb of issue 12, in a child under a cap.

Builds the files with ``tests/reliability/bombs.py`` (a 1 MB deflate bomb that inflates to
1 GiB, a 2 kB DICOM whose JPEG SOF says 65000 x 65000, a 1.2 kB DICOM whose JPEG 2000 SIZ
says 11000 x 11000, a bare JPEG with a 65000 x 65000 SOF) and the 1,100-level folder tree,
then prints, per file and read (header pass, full read), the reason, the wall time and the
child's peak RSS; for the tree, the time of one inbox rescan and whether it raised.

Usage: ``PYTHONPATH=. python bench/bench_input_bombs.py [--as-bytes 4294967296]`` (a larger cap lets
the code before the guards show its own peak instead of a MemoryError).
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from tests.reliability.bombs import (
    deflate_bomb,
    j2k_siz_bomb,
    jpeg_sof_bomb,
    read_bounded,
)


def _bare_jpeg_bomb(path: Path) -> Path:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((64, 64), dtype=np.uint8), mode="L").save(path, quality=90)
    stream = bytearray(path.read_bytes())
    at = stream.index(b"\xff\xc0")
    stream[at + 5 : at + 9] = struct.pack(">HH", 65_000, 65_000)
    path.write_bytes(bytes(stream))
    return path


def _deep_tree(inbox: Path, depth: int = 1_100) -> None:
    inbox.mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(inbox)
        for _ in range(depth):
            os.mkdir("d")
            os.chdir("d")
        Path("deep.dcm").write_bytes(b"x")
    finally:
        os.chdir(cwd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--as-bytes", type=int, default=1024**3, help="child address-space cap")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        files = {
            "deflate bomb": deflate_bomb(root / "deflate.dcm"),
            "JPEG SOF 65000^2 (DICOM)": jpeg_sof_bomb(root / "sof.dcm"),
            "J2K SIZ 11000^2 (DICOM)": j2k_siz_bomb(root / "j2k.dcm"),
            "JPEG SOF 65000^2 (bare)": _bare_jpeg_bomb(root / "sof.jpeg"),
        }
        print(f"{'file':28} {'bytes':>9} {'read':6} {'reason':10} {'seconds':>8} {'peak MiB':>9}")
        for label, path in files.items():
            for what in ("header", "image"):
                read = read_bounded(path, what, address_space=args.as_bytes, timeout_s=600)
                print(
                    f"{label:28} {path.stat().st_size:9,} {what:6} {read.reason or 'accepted':10} "
                    f"{read.seconds:8.3f} {read.peak_rss_mib:9.0f}"
                    + (f"  exit {read.returncode}" if read.returncode else "")
                )
        inbox = root / "inbox"
        _deep_tree(inbox)
        from ingest.watcher import InboxWatcher, Origin, WatchConfig

        watcher = InboxWatcher(WatchConfig(inbox=inbox), lambda batch: [])
        started = time.perf_counter()
        try:
            found = watcher.rescan(Origin.BACKFILL)
            outcome = f"{found} file(s) found, no error"
        except RecursionError:
            outcome = "RecursionError"
        print(f"1,100-level tree: one rescan {time.perf_counter() - started:.3f} s, {outcome}")
        subprocess.run(["rm", "-rf", str(inbox)], check=True)


if __name__ == "__main__":
    main()
