"""The patient-level split of the real manifest: disjoint, stratified, reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model import dataset
from tests.datasets import FULL_DATASET, SAMPLE_DIR


@pytest.fixture(scope="module")
def records_and_hashes() -> tuple[list[dataset.Record], list[str]]:
    records = dataset.load_manifest(FULL_DATASET.require())
    return records, dataset.content_hashes(records)


@FULL_DATASET.needed
def test_split_keeps_every_patient_and_every_image_on_one_side(records_and_hashes) -> None:
    records, hashes = records_and_hashes
    split = dataset.patient_split(records, hashes, 0.15, seed=11)
    train_patients = {r.patient_id for r in split.train}
    assert not train_patients & {r.patient_id for r in split.validation}
    digest = {r.path: h for r, h in zip(records, hashes, strict=True)}
    assert not {digest[r.path] for r in split.train} & {digest[r.path] for r in split.validation}
    assert len(split.train) + len(split.validation) == len(records)


@FULL_DATASET.needed
def test_split_is_stratified_and_about_the_requested_size(records_and_hashes) -> None:
    records, hashes = records_and_hashes
    split = dataset.patient_split(records, hashes, 0.15, seed=11)
    share = len(split.validation) / len(records)
    assert 0.12 < share < 0.18
    pneumonia_rate = [np.mean([r.label for r in part]) for part in (split.train, split.validation)]
    assert abs(pneumonia_rate[0] - pneumonia_rate[1]) < 0.03
    assert all(r in split.validation for r in records if r.folder_split == "val")


@FULL_DATASET.needed
def test_split_depends_only_on_the_seed(records_and_hashes) -> None:
    records, hashes = records_and_hashes
    a = dataset.patient_split(records, hashes, 0.15, seed=3)
    b = dataset.patient_split(records, hashes, 0.15, seed=3)
    c = dataset.patient_split(records, hashes, 0.15, seed=4)
    assert a.validation == b.validation
    assert a.validation != c.validation


def test_byte_identical_images_of_different_patients_are_grouped_together(tmp_path: Path) -> None:
    same = [
        dataset.Record(tmp_path / f"{i}.jpeg", 1, pid, "train")
        for i, pid in enumerate(["p1", "p2", "p3"])
    ]
    groups = dataset.split_groups(same, ["h-shared", "h-shared", "h-other"])
    assert groups[0] == groups[1] != groups[2]


def test_cached_array_is_reused_and_equals_the_preprocessing(tmp_path: Path) -> None:
    from ingest import read_image
    from model.preprocess import preprocess

    records = dataset.load_manifest(SAMPLE_DIR)[:3]
    calls: list[Path] = []

    def reader(path: Path) -> np.ndarray:
        calls.append(path)
        return read_image(path).pixels

    first = dataset.load_cached_array(records, 48, tmp_path, reader)
    second = dataset.load_cached_array(records, 48, tmp_path, reader)
    assert len(calls) == 3  # the second call read the cache, not the images
    assert np.array_equal(first, second)
    expected = preprocess(read_image(records[0].path).pixels, 48)[..., 0]
    assert np.array_equal(first[0].astype(np.float32) / 255.0, expected)


@FULL_DATASET.needed
def test_the_shipped_models_split_is_rederived_and_another_is_refused() -> None:
    import dataclasses

    from model.card import SHIPPED_DIR, ModelCard

    data = FULL_DATASET.require()
    card = ModelCard.load(SHIPPED_DIR)
    assert dataset.training_split(data, card).summary() == card.data["split"]
    other_seed = {**card.training, "config": {**card.training["config"], "seed": 1}}
    with pytest.raises(ValueError, match="differs"):
        dataset.training_split(data, dataclasses.replace(card, training=other_seed))
