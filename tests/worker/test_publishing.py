"""publish: overlay PNG for the page, SR + SC tracked for the delivery loop; never fails
the triage, never silent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from db.models import ResultKind, ResultState, Status
from db.results import objects_of, summary
from db.worklist import Arrival, ScoreValues, admit
from ingest import read_image
from pacs import codes
from tests.models import untrained_classifier
from tests.pacs import sr_tree
from tests.pacs.scp import SCP_AE_TITLE, StorageSCP, storage_scp
from tests.support.pacs import URGENT, pneumonia_grey, write_radiograph
from tests.support.worklist import record_scored, record_unscored
from web.overlays import heatmap_file, overlay_file, thumbnail_file
from worker.publishing import (
    SOURCE_MISSING,
    SOURCE_UNREFERENCEABLE,
    Remaining,
    Unpublishable,
    give_up,
    publish,
    publish_rows,
    render_overlay,
)
from worker.settings import Settings

pytestmark = pytest.mark.tf  # publish renders the scorer's Grad-CAM


@pytest.fixture
def reference_grey() -> np.ndarray:
    return pneumonia_grey()


@pytest.fixture
def source_file(tmp_path: Path, reference_grey: np.ndarray) -> Path:
    return write_radiograph(tmp_path / "inbox" / "chest.dcm", reference_grey)


@pytest.fixture(scope="module")
def scorer():  # type: ignore[no-untyped-def]
    return untrained_classifier()


@pytest.fixture
def scp() -> Iterator[StorageSCP]:
    with storage_scp() as running:
        yield running


def results_count(outcome: str) -> float:
    value = REGISTRY.get_sample_value("cxr_triage_pacs_results_total", {"outcome": outcome})
    return value or 0.0


def settings_for(tmp_path: Path, **pacs: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", **pacs)  # type: ignore[arg-type]


def test_a_dicom_gets_overlay_sr_and_sc_written_and_never_sent_here(
    tmp_path, source_file, scp, scorer
):
    settings = settings_for(
        tmp_path, pacs_host="127.0.0.1", pacs_port=scp.port, pacs_ae_title=SCP_AE_TITLE
    )
    image = read_image(source_file)
    written = publish(settings, scorer, 7, source_file, image, URGENT)
    assert isinstance(written, list)
    assert [o.kind for o in written] == [ResultKind.SR, ResultKind.SC]
    for obj in written:
        assert Path(obj.path).parent == settings.outbox
        assert pydicom.dcmread(obj.path).SOPInstanceUID == obj.sop_instance_uid
    assert scp.associations == 0  # the delivery loop sends; triage work never waits on a PACS
    page_png = overlay_file(settings.overlays, image.metadata.file_sha256)
    assert page_png.is_file()
    # the review page's overlay has its caption bar over the top; the SC has none there
    caption_bar = np.asarray(Image.open(page_png).convert("RGB"))[2:20, :200]
    sc_top = pydicom.dcmread(written[1].path).pixel_array[2:20, :200]
    assert (caption_bar.max(axis=2) < 40).mean() > 0.7
    assert (sc_top.max(axis=2) < 40).mean() < 0.3


def test_a_jpeg_gets_its_overlay_and_no_dicom_results(tmp_path, reference_grey, scorer):
    jpeg = tmp_path / "chest.jpeg"
    Image.fromarray(reference_grey).save(jpeg)
    settings = settings_for(tmp_path)
    image = read_image(jpeg)
    assert publish(settings, scorer, 8, jpeg, image, URGENT) == []
    sha = image.metadata.file_sha256
    assert overlay_file(settings.overlays, sha).is_file()
    # the review page's heatmap layer (the model's grid, 8-bit) and the worklist thumbnail
    with Image.open(heatmap_file(settings.overlays, sha)) as layer:
        assert layer.mode == "L" and max(layer.size) <= 512
    thumb = thumbnail_file(settings.overlays, sha)
    assert thumb.stat().st_size < 8_000
    with Image.open(thumb) as small:
        assert small.format == "WEBP" and max(small.size) == 96
    assert not settings.outbox.exists()


def test_a_broken_source_is_an_unpublishable_outcome_not_raised(
    tmp_path, source_file, caplog, scorer
):
    settings = settings_for(tmp_path)
    image = read_image(source_file)
    source_file.write_bytes(b"not DICOM any more")
    outcome = publish(settings, scorer, 10, source_file, image, URGENT)
    assert outcome == Unpublishable(SOURCE_UNREFERENCEABLE, outcome.detail)  # type: ignore[union-attr]
    assert "not a readable DICOM" in outcome.detail  # type: ignore[union-attr]
    assert "row 10" in caplog.text
    assert "Test^Child" not in caplog.text  # no PHI in the log


def test_publish_rows_tracks_every_dicom_rows_results_even_without_a_valid_uid(
    settings, sessions, tmp_path, reference_grey, scorer
):
    good = write_radiograph(tmp_path / "archive" / "good.dcm", reference_grey)
    bad = tmp_path / "archive" / "bad.dcm"
    ds = pydicom.dcmread(good)
    ds.StudyInstanceUID = ""  # ingest scores it; no result can reference it
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(bad, enforce_file_format=True)
    scored = ScoreValues(0.9, "pneumonia", "urgent", 0, 0.44, "m1")
    with sessions.begin() as session:
        ids = []
        for index, path in enumerate((good, bad)):
            entry, _ = admit(session, Arrival(f"{index}" * 64, path.name, str(path), "dicom"))
            record_scored(session, entry, scored, str(path))
            ids.append(entry.id)
    before = results_count("failed")
    assert publish_rows(settings, sessions, scorer, ids) == Remaining()
    with sessions() as session:
        found = objects_of(session, ids)
    assert [o.state for o in found[ids[0]]] == [ResultState.PENDING] * 2
    assert summary(found[ids[1]]) == f"failed: {SOURCE_UNREFERENCEABLE}"
    assert "(0020,000D) StudyInstanceUID" in (found[ids[1]][0].last_error or "")
    assert results_count("failed") == before + 2
    give_up(sessions, [ids[0]], "the archived original never appeared")
    with sessions() as session:
        assert summary(objects_of(session, ids)[ids[0]]) == f"failed: {SOURCE_MISSING}"


def test_overlay_carries_the_grad_cam_of_the_scoring_network(source_file, scorer):
    image = read_image(source_file)
    with_heatmap = np.asarray(render_overlay(scorer, image, URGENT), dtype=np.int16)
    plain = np.asarray(Image.fromarray(image.pixels.astype(np.uint8)).convert("RGB"))
    assert with_heatmap.shape[:2] == plain.shape[:2]
    # Below the caption band the heatmap changes the radiograph's pixels somewhere.
    assert np.abs(with_heatmap[30:] - plain[30:].astype(np.int16)).max() > 20


def test_a_batch_publishes_its_done_rows_and_hands_back_those_not_archived_yet(
    settings, sessions, tmp_path, reference_grey, scorer
):
    archived = tmp_path / "archive" / "a.jpeg"
    archived.parent.mkdir()
    Image.fromarray(reference_grey).save(archived)
    sha = read_image(archived).metadata.file_sha256
    scored = ScoreValues(0.9, "pneumonia", "urgent", 0, 0.44, "m1")
    with sessions.begin() as session:
        done, _ = admit(session, Arrival(sha, "a.jpeg", "/inbox/a.jpeg"))
        record_scored(session, done, scored, str(archived))
        moving, _ = admit(session, Arrival("b" * 64, "b.jpeg", "/inbox/b.jpeg"))
        record_scored(session, moving, scored, str(tmp_path / "archive" / "not-yet.jpeg"))
        other = archived.with_name("c.jpeg")  # readable: publishing it would leave an overlay
        Image.fromarray(255 - reference_grey).save(other)
        requeued, _ = admit(session, Arrival("c" * 64, "c.jpeg", "/inbox/c.jpeg"))
        record_scored(session, requeued, scored, str(other))
        requeued.status = Status.QUEUED  # scored once, now waiting to be scored again
        rejected, _ = admit(session, Arrival("d" * 64, "d.jpeg", "/inbox/d.jpeg"))
        record_unscored(session, rejected, Status.REJECTED, "not_chest", "", str(other))
        ids = [done.id, moving.id, requeued.id, rejected.id]
    assert publish_rows(settings, sessions, scorer, [*ids, 999]) == Remaining(pending=[moving.id])
    # the overlay, the heatmap layer and the thumbnail of the one row published
    assert sorted(p.name for p in settings.overlays.iterdir()) == [
        f"{sha}.heat.png",
        f"{sha}.png",
        f"{sha}.thumb.webp",
    ]


def test_a_row_flagged_outside_the_training_population_gets_the_caveat_in_sr_and_sc(
    settings, sessions, tmp_path, reference_grey, scorer
):
    """The flag lives on the worklist row; the results are rebuilt from the row."""
    ids = []
    with sessions.begin() as session:
        for index, flags in enumerate(((), ("outside_training_population",))):
            path = write_radiograph(tmp_path / "archive" / f"{index}.dcm", reference_grey)
            ds = pydicom.dcmread(path)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
            ds.save_as(path, enforce_file_format=True)
            entry, _ = admit(session, Arrival(f"{index}" * 64, path.name, str(path), "dicom"))
            scored = ScoreValues(0.9, "pneumonia", "urgent", 0, 0.44, "m1", flags)
            record_scored(session, entry, scored, str(path))
            ids.append(entry.id)
    assert publish_rows(settings, sessions, scorer, ids) == Remaining()
    with sessions() as session:
        found = objects_of(session, ids)
    caveats = []
    for entry_id in ids:
        by_kind = {o.kind: pydicom.dcmread(o.path) for o in found[entry_id]}
        sr, sc = by_kind[ResultKind.SR], by_kind[ResultKind.SC]
        in_sr = sr_tree.find(sr, codes.LOCAL_SCHEME, "POPULATION") != []
        caveats.append((in_sr, "outside the training population" in sc.ImageComments))
    assert caveats == [(False, False), (True, True)]
