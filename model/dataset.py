"""The training data: manifest, patient-level split, duplicate check, and the uint8 cache.

Everything here exists to keep validation honest: images of one child never straddle
the split, byte-identical images are kept on one side, and the split is a pure function of
the manifest and a seed.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from model.card import ModelCard
from model.preprocess import PREPROCESSING_VERSION, resize_square, to_model_levels

LABELS = ("NORMAL", "PNEUMONIA")  # index = class id; PNEUMONIA is the positive class


@dataclass(frozen=True)
class Record:
    path: Path
    label: int  # 0 NORMAL, 1 PNEUMONIA
    patient_id: str
    folder_split: str  # "train" or "val" as shipped in the data folder
    squashed_copy: bool = False  # a 224 x 224 copy whose original aspect is unknown


@dataclass(frozen=True)
class Split:
    train: tuple[Record, ...]
    validation: tuple[Record, ...]
    seed: int

    def summary(self) -> dict[str, object]:
        def describe(records: Sequence[Record]) -> dict[str, int]:
            return {
                "images": len(records),
                "normal": sum(r.label == 0 for r in records),
                "pneumonia": sum(r.label == 1 for r in records),
                "patients": len({r.patient_id for r in records}),
            }

        return {
            "seed": self.seed,
            "train": describe(self.train),
            "validation": describe(self.validation),
        }


def load_manifest(data_dir: Path) -> list[Record]:
    """Read ``MANIFEST.csv``; labels come from the folder names, as the data README says."""
    manifest = data_dir / "MANIFEST.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: is --data the pediatric-cxr folder?")
    records = []
    with manifest.open(newline="") as f:
        for row in csv.DictReader(f):
            path = data_dir / row["split"] / row["label"] / row["filename"]
            records.append(
                Record(
                    path,
                    LABELS.index(row["label"]),
                    row["patient_id"],
                    row["split"],
                    squashed_copy=not row.get("orig_width", "x"),
                )
            )
    return records


def manifest_sha256(data_dir: Path) -> str:
    return hashlib.sha256((data_dir / "MANIFEST.csv").read_bytes()).hexdigest()


def content_hashes(records: Sequence[Record]) -> list[str]:
    return [hashlib.sha256(r.path.read_bytes()).hexdigest() for r in records]


def split_groups(records: Sequence[Record], hashes: Sequence[str]) -> list[str]:
    """Grouping key per record: the patient, merged with every patient it shares an image with.

    Byte-identical files under different patient ids would otherwise leak one image into
    both sides of the split.
    """
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    first_owner: dict[str, str] = {}
    for record, digest in zip(records, hashes, strict=True):
        owner = first_owner.setdefault(digest, record.patient_id)
        parent[find(record.patient_id)] = find(owner)
    return [find(r.patient_id) for r in records]


def patient_split(
    records: Sequence[Record], hashes: Sequence[str], validation_fraction: float, seed: int
) -> Split:
    """Class-stratified, patient-grouped, seeded split of the train folder.

    The data folder's own 16-image ``val`` split always joins validation (too small to
    select on alone, harmless to add).
    """
    if not 0.05 <= validation_fraction <= 0.5:
        raise ValueError(f"validation_fraction must be in [0.05, 0.5], got {validation_fraction}")
    pool = [i for i, r in enumerate(records) if r.folder_split == "train"]
    groups = split_groups(records, hashes)
    folds = StratifiedGroupKFold(
        n_splits=round(1 / validation_fraction), shuffle=True, random_state=seed
    )
    _, held = next(folds.split(pool, [records[i].label for i in pool], [groups[i] for i in pool]))
    held_out = {pool[j] for j in held}
    train = tuple(records[i] for i in pool if i not in held_out)
    validation = tuple(
        r for i, r in enumerate(records) if i in held_out or r.folder_split != "train"
    )
    _check_disjoint(train, validation, records, hashes)
    return Split(train, validation, seed)


def _check_disjoint(
    train: Sequence[Record],
    validation: Sequence[Record],
    records: Sequence[Record],
    hashes: Sequence[str],
) -> None:
    digest_of = {r.path: h for r, h in zip(records, hashes, strict=True)}
    shared_patients = {r.patient_id for r in train} & {r.patient_id for r in validation}
    shared_images = {digest_of[r.path] for r in train} & {digest_of[r.path] for r in validation}
    if shared_patients or shared_images:
        raise AssertionError(
            f"split leaks {len(shared_patients)} patients and {len(shared_images)} images"
        )


def load_cached_array(
    records: Sequence[Record],
    size: int,
    cache_dir: Path,
    read_grey: Callable[[Path], np.ndarray],
    desc: str = "decoding",
) -> np.ndarray:
    """The preprocessed images as a ``(N, size, size)`` uint8 array, cached on disk.

    The cache key covers the file list, the input size and the preprocessing version, so a
    change to any of them rebuilds it. ``read_grey`` is the production reader
    (``ingest.read_image(path).pixels``): training sees exactly what the worker sees.
    """
    key = hashlib.sha256(
        json.dumps([size, PREPROCESSING_VERSION, [str(r.path) for r in records]]).encode()
    ).hexdigest()[:16]
    cache_file = cache_dir / f"images-{size}px-{key}.npy"
    if cache_file.is_file():
        return np.load(cache_file)
    array = np.empty((len(records), size, size), dtype=np.uint8)
    for i, record in enumerate(tqdm(records, desc=desc, unit="img")):
        array[i] = to_model_levels(resize_square(read_grey(record.path), size))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npy")
    np.save(tmp, array)
    tmp.replace(cache_file)
    return array


def load_cached_originals(
    records: Sequence[Record],
    cache_dir: Path,
    read_grey: Callable[[Path], np.ndarray],
    desc: str = "decoding",
) -> list[np.ndarray]:
    """Each image as read, in its own shape, as uint8 display levels, cached on disk.

    The field-of-view augmentation (:mod:`model.geometry`) crops these before the
    production preprocessing, so the cache keeps the stored aspect instead of the square.
    """
    key = hashlib.sha256(
        json.dumps(["originals/v1", [str(r.path) for r in records]]).encode()
    ).hexdigest()[:16]
    cache_file = cache_dir / f"originals-{key}.npz"
    if cache_file.is_file():
        with np.load(cache_file) as stored:
            flat, shapes = stored["flat"], stored["shapes"]
        ends = np.cumsum(shapes[:, 0] * shapes[:, 1])
        starts = ends - shapes[:, 0] * shapes[:, 1]
        return [flat[a:b].reshape(h, w) for a, b, (h, w) in zip(starts, ends, shapes, strict=True)]
    images = [
        np.clip(np.rint(read_grey(r.path)), 0, 255).astype(np.uint8)
        for r in tqdm(records, desc=desc, unit="img")
    ]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        flat=np.concatenate([i.ravel() for i in images]),
        shapes=np.array([i.shape for i in images], dtype=np.int64),
    )
    tmp.replace(cache_file)
    return images


def stratified_subsample(records: Sequence[Record], n: int, seed: int) -> list[Record]:
    """About ``n`` records, half of each class (for smoke runs), chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    chosen: list[Record] = []
    for label in (0, 1):
        pool = [r for r in records if r.label == label]
        take = min(len(pool), max(2, n // 2))
        chosen += [pool[i] for i in rng.choice(len(pool), size=take, replace=False)]
    return chosen


def write_predictions(path: Path, records: Sequence[Record], probabilities: np.ndarray) -> None:
    """``file,label,probability`` per validation image, for audit and plots."""
    lines = ["file,label,probability"]
    lines += [
        f"{r.path.name},{LABELS[r.label]},{p:.6f}"
        for r, p in zip(records, probabilities, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


def training_split(data_dir: Path, card: ModelCard) -> Split:
    """The split ``card``'s model was trained with, re-derived from the seed, validation
    fraction and subsample recorded in the card.

    Raises ``ValueError`` if ``data_dir`` gives another split: scoring a model on images
    it was trained on and calling it validation is the error this guards against.
    """
    config = card.training.get("config", {})
    records = load_manifest(data_dir)
    if config.get("max_images"):
        records = stratified_subsample(records, config["max_images"], config["seed"])
    split = patient_split(
        records, content_hashes(records), config["validation_fraction"], config["seed"]
    )
    if split.summary() != card.data.get("split"):
        raise ValueError(
            f"the split of {data_dir} differs from the one {card.model_version} was trained "
            "with: its validation images would not be unseen"
        )
    return split
