"""One cxr-triage deployment under test: folders, environment, and its real processes."""

from __future__ import annotations

import copy
import hashlib
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager
from functools import lru_cache
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
from PIL import Image
from pydicom.uid import JPEG2000Lossless, generate_uid

from db.models import Status
from tests.corpus import dataset_jpegs
from tests.ingest.dicom_factory import (
    dx_for_presentation_16bit,
    encapsulated,
    jpeg_grey,
    sample_jpegs,
    write,
)
from tests.processes import cli, files_under, own_host, rows, running, service_env


class Stack:
    """Folders under ``root``, the ``CXR_*`` environment, and helpers to start processes."""

    def __init__(
        self, root: Path, database_url: str, broker_url: str, model_dir: Path, **extra: str
    ) -> None:
        self.root = root
        self.database_url = database_url
        self.env = service_env(root, database_url, broker_url, CXR_MODEL_PATH=str(model_dir))
        self.env.update(extra)
        for name in ("inbox", "staging", "logs"):
            (root / name).mkdir(exist_ok=True)
        self.inbox = root / "inbox"
        self.staging = root / "staging"
        self.archive = root / "archive"
        self.quarantine = root / "quarantine"
        self.logs: list[Path] = []

    def upgrade(self) -> None:
        cli(["db", "upgrade"], self.env)

    def log(self, name: str) -> Path:
        path = self.root / "logs" / f"{name}.log"
        if path not in self.logs:
            self.logs.append(path)
        return path

    def worker(
        self, name: str = "worker", concurrency: int = 1, *extra: str
    ) -> AbstractContextManager[subprocess.Popen[bytes]]:
        args = ["worker", "--concurrency", str(concurrency), "--hostname", f"{name}@%h", *extra]
        return running(args, self.env, self.log(name))

    def watcher(self, name: str = "watch") -> AbstractContextManager[subprocess.Popen[bytes]]:
        return running(["watch"], self.env, self.log(name))

    def node_worker(
        self, host: str, concurrency: int = 1
    ) -> AbstractContextManager[subprocess.Popen[bytes]]:
        """A worker node of its own: host name ``host`` (a private UTS namespace), Celery
        node ``worker@host``, one process group that a test can kill whole."""
        args = ["worker", "--concurrency", str(concurrency), "--hostname", "worker@%h"]
        return running(args, self.env, self.log(host), prefix=own_host(host))

    def node_watcher(self, host: str) -> AbstractContextManager[subprocess.Popen[bytes]]:
        """``cxr-triage watch`` on a host of its own (active, or standing by)."""
        return running(["watch"], self.env, self.log(host), prefix=own_host(host))

    def rows(self) -> list:  # type: ignore[type-arg]
        return rows(self.database_url)

    def statuses(self) -> dict[Status, int]:
        counts: dict[Status, int] = {}
        for row in self.rows():
            counts[Status(row.status)] = counts.get(Status(row.status), 0) + 1
        return counts

    def drop(self, source: Path, name: str | None = None) -> Path:
        """Deliver a staged file the way senders do: a temporary name, then a rename."""
        target = self.inbox / (name or source.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(source.read_bytes())
        partial.rename(target)
        return target

    def filed(self) -> list[Path]:
        """Every original in the archive or the quarantine (sidecars left out)."""
        return [
            p
            for folder in (self.archive, self.quarantine)
            for p in files_under(folder)
            if not (p.suffix == ".json" and Path(str(p)[:-5]).is_file())  # a sidecar
        ]

    def assert_filed_once(self) -> None:
        """Each row's original lies once in archive/quarantine, and the inbox is empty."""
        assert files_under(self.inbox) == [], files_under(self.inbox)
        duplicates = self.quarantine / "duplicate"  # copies of a row's bytes under other names
        digests = [
            sha256(p)
            for p in self.filed()
            if not p.is_symlink() and not p.is_relative_to(duplicates)
        ]
        assert len(digests) == len(set(digests)), "an original was filed twice"
        for row in self.rows():
            assert row.archived_path and Path(row.archived_path).exists(), row.id
            if not Path(row.archived_path).is_symlink():
                assert sha256(Path(row.archived_path)) == row.file_sha256, row.id


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def small_pngs(folder: Path, count: int, size: int = 64, nested: bool = True) -> list[Path]:
    """``count`` distinct small chest radiograph PNGs, spread over nested folders.

    Real training images at ``size`` px (random noise would now be refused by the content
    check as not a chest radiograph), each made unique by the values of its first pixels.
    """
    bases = [
        np.asarray(Image.open(path).convert("L").resize((size, size)), dtype=np.uint8)
        for path in dataset_jpegs(24)
    ]
    made = []
    for n in range(count):
        sub = folder / f"study{n // 100:03d}" / f"series{n // 10 % 10}" if nested else folder
        sub.mkdir(parents=True, exist_ok=True)
        pixels = bases[n % len(bases)].copy()
        pixels[0, :3] = (n >> 16 & 255, n >> 8 & 255, n & 255)  # unique content
        path = sub / f"img{n:05d}.png"
        Image.fromarray(pixels).save(path, optimize=False, compress_level=1)
        made.append(path)
    return made


@lru_cache(maxsize=1)
def _slow_template() -> pydicom.Dataset:
    """A 4,000 x 4,000 16-bit JPEG 2000 CR chest DICOM: several seconds to decode on one
    core, which keeps a task observably in flight without any test-only code path. Encoded
    with a single resolution level, so the worker's reduced decode (``ingest.reduced``)
    cannot take a lower one and must decode it whole."""
    ref = jpeg_grey(sample_jpegs(1)[0])
    big = np.asarray(Image.fromarray(ref).resize((4000, 4000)))
    noise = np.random.default_rng(0).integers(-3, 4, big.shape)
    pixels = np.clip(big.astype(int) + noise, 0, 255).astype(np.uint8)
    ds = dx_for_presentation_16bit(pixels)
    code = imagecodecs.jpeg2k_encode(
        pixels.astype(np.uint16) * 257, codecformat="J2K", reversible=True, resolutions=1
    )
    return encapsulated(ds, bytes(code), JPEG2000Lossless)


def slow_dicom(path: Path, **attributes: object) -> Path:
    """A slow-to-decode DICOM with fresh UIDs (distinct content), encoded once per session."""
    ds = copy.deepcopy(_slow_template())
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return write(ds, path)


def process_tree_rss_kib(pid: int) -> int:
    from tests.support import children, rss_kib

    return rss_kib(pid) + sum(rss_kib(c) for c in children(pid))


def iter_tree(pid: int) -> Iterator[int]:
    from tests.support import children

    yield pid
    for child in children(pid):
        yield from iter_tree(child)
