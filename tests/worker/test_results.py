"""publish: overlay PNG for the page, SR + SC for PACS, C-STORE; never fails the triage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from ingest import read_image
from tests.pacs.conftest import URGENT, pneumonia_grey, write_radiograph
from tests.pacs.scp import SCP_AE_TITLE, StorageSCP, free_port, storage_scp
from web.overlays import overlay_file
from worker.results import publish, render_overlay
from worker.settings import Settings


@pytest.fixture
def reference_grey() -> np.ndarray:
    return pneumonia_grey()


@pytest.fixture
def source_file(tmp_path: Path, reference_grey: np.ndarray) -> Path:
    return write_radiograph(tmp_path / "inbox" / "chest.dcm", reference_grey)


@pytest.fixture
def scp() -> Iterator[StorageSCP]:
    with storage_scp() as running:
        yield running


def results_count(outcome: str) -> float:
    value = REGISTRY.get_sample_value("cxr_triage_pacs_results_total", {"outcome": outcome})
    return value or 0.0


def settings_for(tmp_path: Path, **pacs: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", **pacs)  # type: ignore[arg-type]


def test_a_dicom_gets_overlay_sr_and_sc_stored_on_the_pacs(tmp_path, source_file, scp):
    settings = settings_for(
        tmp_path, pacs_host="127.0.0.1", pacs_port=scp.port, pacs_ae_title=SCP_AE_TITLE
    )
    image = read_image(source_file)
    before = results_count("stored")
    written = publish(settings, object(), 7, source_file, image, URGENT)
    assert [p.parent for p in written] == [settings.outbox_dir] * 2
    assert {ds.SOPInstanceUID for ds in scp.received} == {
        pydicom.dcmread(p).SOPInstanceUID for p in written
    }
    assert overlay_file(settings.overlay_dir, image.metadata.file_sha256).is_file()
    assert results_count("stored") == before + 1


def test_a_jpeg_gets_its_overlay_and_no_dicom_results(tmp_path, reference_grey):
    jpeg = tmp_path / "chest.jpeg"
    Image.fromarray(reference_grey).save(jpeg)
    settings = settings_for(tmp_path)
    image = read_image(jpeg)
    assert publish(settings, object(), 8, jpeg, image, URGENT) == []
    assert overlay_file(settings.overlay_dir, image.metadata.file_sha256).is_file()
    assert not settings.outbox_dir.exists()


def test_a_pacs_that_is_down_leaves_the_files_in_the_outbox(tmp_path, source_file):
    settings = settings_for(
        tmp_path, pacs_host="127.0.0.1", pacs_port=free_port(), pacs_timeout_s=2.0
    )
    before = results_count("failed")
    written = publish(settings, object(), 9, source_file, read_image(source_file), URGENT)
    assert len(written) == 2 and all(p.is_file() for p in written)
    assert results_count("failed") == before + 1


def test_a_broken_source_is_logged_and_counted_not_raised(tmp_path, source_file, caplog):
    settings = settings_for(tmp_path)
    image = read_image(source_file)
    source_file.write_bytes(b"not DICOM any more")
    before = results_count("failed")
    assert publish(settings, object(), 10, source_file, image, URGENT) == []
    assert results_count("failed") == before + 1
    assert "row 10" in caplog.text
    assert "Test^Child" not in caplog.text  # no PHI in the log


@pytest.mark.tf
def test_overlay_carries_the_grad_cam_of_the_scoring_network(source_file):
    import keras

    from model.network import build_model
    from model.preprocess import preprocess

    keras.utils.set_random_seed(7)  # an untrained network whose logit has positive evidence

    class Scorer:  # the two things publish uses from model.predict.Classifier
        network = build_model(64)

        def inputs(self, images: list[np.ndarray]) -> np.ndarray:
            return np.stack([preprocess(image, 64) for image in images])

    image = read_image(source_file)
    with_heatmap = np.asarray(render_overlay(Scorer(), image, URGENT), dtype=np.int16)
    without = np.asarray(render_overlay(object(), image, URGENT), dtype=np.int16)
    assert with_heatmap.shape == without.shape
    assert np.abs(with_heatmap - without).max() > 0
