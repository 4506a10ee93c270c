"""One reading order, whoever reads it: ``db.reading``, the view ``reading_list`` (a PACS-side
tool's SQL), ``cxr-triage worklist --json`` (a real subprocess), ``GET /api/worklist`` and the
review page (the FastAPI app on the same real database), on SQLite and PostgreSQL.

1. A flood of 5,000 images through the storage functions the worker uses (admit, claim,
   record_final): random studies, tiers, probabilities, statuses, reasons and arrival times.
   The order is checked against the rule computed here independently, and against the
   invariants it exists for; then the five readers must agree entry by entry.
2. A study of a PA and a lateral DICOM through the real intake and pipeline (a fake scorer
   stands in for TensorFlow): one entry placed by the PA; a second PA raises it, never lowers.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_session_factory
from db.models import Status, WorklistEntry, utcnow
from db.reading import TO_READ, reading_list
from db.worklist import Arrival, Final, ScoreValues, admit_many, claim, record_final
from ingest.errors import Disposition, Reason, disposition
from ingest.watcher import Origin
from model.prediction import Label, Prediction, Priority
from tests.corpus import cr_dicom, dataset_jpegs
from tests.fakes import FakeScorer
from tests.support.web import PASSWORD, USERNAME, Worklist, seed_accounts
from web.app import create_app
from worker.intake import Intake
from worker.outcomes import WORKER_REASONS
from worker.pipeline import Pipeline
from worker.settings import Settings

TIERS = ("urgent", "suspect", "routine")
PAGE = 500  # the API's and the page's largest page


@dataclass(frozen=True)
class Entry:
    """An entry as every reader can state it: place, tier, leading image, its images."""

    position: int | None
    tier: str
    leading: int
    images: tuple[int, ...]  # leading first (the view knows only how many)


Listing = tuple[list[Entry], list[Entry]]  # the reading list, the list apart


@dataclass
class Readers:
    url: str
    client: TestClient  # logged in to the page; the API gets HTTP Basic
    data_dir: Path

    def function(self) -> Listing:
        sessions = make_session_factory(make_engine(self.url))
        with sessions() as session:
            page = reading_list(session, TO_READ, limit=None)
        listed = [
            Entry(e.position, e.tier, e.leading.id, tuple(i.id for i in e.images))
            for e in page.entries
        ]
        apart = [
            Entry(None, e.tier, e.leading.id, tuple(i.id for i in e.images)) for e in page.apart
        ]
        return listed, apart

    def view(self) -> Listing:
        """What a tool reads with plain SQL (the images as a count only)."""
        engine = make_engine(self.url)
        with engine.connect() as connection:
            listed = [
                Entry(position, tier, entry_id, (entry_id,) * images)
                for position, tier, entry_id, images in connection.execute(
                    text("SELECT position, tier, entry_id, images FROM reading_list")
                )
            ]
            apart = [
                Entry(None, tier, entry_id, (entry_id,) * images)
                for tier, entry_id, images in connection.execute(
                    text("SELECT tier, entry_id, images FROM reading_list_apart")
                )
            ]
        engine.dispose()
        return listed, apart

    def cli(self) -> Listing:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
        printed = subprocess.run(
            [sys.executable, "-m", "worker.cli", "worklist", "--json", "--limit", "100000"],
            env={**clean, "CXR_DATA_DIR": str(self.data_dir), "CXR_DATABASE_URL": self.url},
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        rows = json.loads(printed.stdout)
        return _grouped([r for r in rows if r["tier"] != "apart"]), _grouped(
            [r for r in rows if r["tier"] == "apart"]
        )

    def api(self) -> Listing:
        rows: list[dict[str, object]] = []
        apart: list[dict[str, object]] = []
        offset = 0
        while True:
            body = self.client.get(
                "/api/worklist",
                params={"limit": PAGE, "offset": offset},
                auth=(USERNAME, PASSWORD),
            ).json()
            rows += body["rows"]
            apart += body["apart"]
            offset += PAGE
            if offset >= max(body["total"], body["apart_total"]):
                return _grouped(rows), _grouped(apart)

    def page(self) -> Listing:
        """The page's rows, in the order they are drawn, page after page: the reading list,
        then the list apart (its own view, ``tier=apart``)."""
        rows: list[dict[str, object]] = []
        apart: list[dict[str, object]] = []
        for tier, section in (("", rows), ("apart", apart)):
            offset = 0
            while True:
                html = self.client.get(
                    "/worklist", params={"limit": PAGE, "offset": offset, "tier": tier}
                ).text
                for css, row_id, entry_id, drawn_tier, position in ROW.findall(html):
                    assert (css == "apart") == (tier == "apart" and css != "member")
                    section.append(
                        {
                            "css": css,
                            "id": int(row_id),
                            "entry_id": int(entry_id),
                            "tier": drawn_tier,
                            "position": int(position) if position else None,
                        }
                    )
                offset += PAGE
                if 'rel="next"' not in html:
                    break
        return _grouped(rows), _grouped(apart)


ROW = re.compile(
    r'<tr class="(row|member|apart) [^"]*" data-id="(\d+)" data-entry="(\d+)" '
    r'data-tier="(\w+)"(?: data-position="(\d+)")?>'
)


def _grouped(rows: list[dict[str, object]]) -> list[Entry]:
    """Rows (one per image, an entry's images together, leading first) as entries."""
    entries: list[Entry] = []
    for row in rows:
        if entries and entries[-1].leading == row["entry_id"]:
            last = entries[-1]
            entries[-1] = Entry(last.position, last.tier, last.leading, (*last.images, row["id"]))  # type: ignore[arg-type]
        else:
            assert row["id"] == row["entry_id"], row  # an entry starts with its leading image
            entries.append(Entry(row["position"], row["tier"], row["id"], (row["id"],)))  # type: ignore[arg-type]
    return entries


@pytest.fixture
def readers(database_url: str, tmp_path: Path) -> Iterator[Readers]:
    archive, overlays = tmp_path / "archive", tmp_path / "overlays"
    archive.mkdir()
    sessions = make_session_factory(make_engine(database_url))
    with sessions.begin() as session:
        seed_accounts(session)
    config = Worklist(sessions, {}, archive, overlays, database_url).config()
    with TestClient(create_app(config)) as client:
        login = client.post(
            "/login", data={"username": USERNAME, "password": PASSWORD}, follow_redirects=False
        )
        assert login.status_code == 303
        yield Readers(database_url, client, tmp_path)


def assert_all_agree(readers: Readers) -> Listing:
    """The five readers give one order; returns it (the function's, with every image)."""
    expected = readers.function()
    for name in ("cli", "api", "page"):
        assert getattr(readers, name)() == expected, name
    listed, apart = readers.view()
    counted = (
        [Entry(e.position, e.tier, e.leading, (e.leading,) * len(e.images)) for e in expected[0]],
        [Entry(None, e.tier, e.leading, (e.leading,) * len(e.images)) for e in expected[1]],
    )
    assert (listed, apart) == counted, "view"
    return expected


# -- 1. the flood -------------------------------------------------------------------------------


@dataclass
class Image:
    arrival: Arrival
    fate: str  # queued | processing | done | rejected | failed
    rank: int | None = None
    probability: float | None = None
    reason: str | None = None


def _flood(rng: random.Random, count: int) -> list[Image]:
    """``count`` images in studies of 1-4 (a lateral or a CT among them), accession-only
    groups, JPEGs without identity, and study UIDs reused under another patient ID."""
    refusals = sorted(({r.value for r in Reason}) - set(WORKER_REASONS))
    images: list[Image] = []
    study = 0
    while len(images) < count:
        study += 1
        shape = rng.random()
        patient = f"P{rng.randrange(count):05d}"
        if shape < 0.35:
            identities = [{}]  # a JPEG
        elif shape < 0.65:
            identities = [{"study_instance_uid": f"1.2.3.{study}", "patient_id": patient}]
        elif shape < 0.90:
            uid = f"1.2.3.{study}"
            identities = [{"study_instance_uid": uid, "patient_id": patient}] * rng.randint(2, 4)
        elif shape < 0.97:
            accession = f"A{study}"
            identities = [{"accession_number": accession, "patient_id": patient}] * rng.randint(
                1, 2
            )
        else:  # the same study UID under two patient IDs, by mistake
            uid = f"1.2.3.{study}"
            identities = [
                {"study_instance_uid": uid, "patient_id": patient},
                {"study_instance_uid": uid, "patient_id": patient + "X"},
            ]
        for identity in identities:
            n = len(images)
            arrival = Arrival(
                f"{n:064x}", f"f{n}", f"/inbox/f{n}", "dicom" if identity else "jpeg", **identity
            )
            images.append(_fate(rng, arrival, refusals, in_study=len(identities) > 1))
    return images[:count]


def _fate(rng: random.Random, arrival: Arrival, refusals: list[str], in_study: bool) -> Image:
    draw = rng.random()
    if in_study and draw < 0.25:
        return Image(arrival, "rejected", reason=rng.choice(["lateral_view", "wrong_modality"]))
    if draw < 0.05:
        return Image(arrival, "queued")
    if draw < 0.08:
        return Image(arrival, "processing")
    if draw < 0.26:
        return Image(arrival, "rejected", reason=rng.choice(refusals))
    if draw < 0.30:
        return Image(arrival, "failed", reason=rng.choice(sorted(WORKER_REASONS)))
    rank = rng.choices([0, 1, 2], weights=[2, 1, 4])[0]
    return Image(arrival, "done", rank=rank, probability=rng.random())


def _store(sessions: sessionmaker[Session], rng: random.Random, images: list[Image]) -> None:
    """Admit in bursts (a burst shares one arrival time), then claim and finish in random
    order, in batches, as workers would; some watcher clocks run behind."""
    ids: dict[str, int] = {}
    position = 0
    while position < len(images):
        burst = images[position : position + rng.randint(1, 64)]
        position += len(burst)
        with sessions.begin() as session:
            for image, (entry, created) in zip(
                burst, admit_many(session, [i.arrival for i in burst]), strict=True
            ):
                assert created
                ids[image.arrival.file_sha256] = entry.id
    with sessions.begin() as session:  # another watcher host, its clock minutes behind
        for entry_id in rng.sample(sorted(ids.values()), len(ids) // 10):
            entry = session.get(WorklistEntry, entry_id)
            assert entry is not None
            entry.received_at -= timedelta(seconds=rng.randint(1, 600))
    working = [i for i in images if i.fate != "queued"]
    rng.shuffle(working)
    for start in range(0, len(working), 16):
        batch = working[start : start + 16]
        token = f"task-{start}"
        batch_ids = [ids[i.arrival.file_sha256] for i in batch]
        with sessions.begin() as session:
            held = claim(
                session,
                batch_ids,
                token,
                batch_size=len(batch),
                claimed_by="host:1",
                stale_before=utcnow(),
            )
            assert sorted(e.id for e in held) == sorted(batch_ids)
            finals = [
                _final(ids[i.arrival.file_sha256], i) for i in batch if i.fate != "processing"
            ]
            assert record_final(session, token, finals) == [f.entry_id for f in finals]


def _final(entry_id: int, image: Image) -> Final:
    if image.fate == "done":
        assert image.rank is not None and image.probability is not None
        scored = ScoreValues(
            image.probability, "pneumonia", TIERS[image.rank], image.rank, 0.5, "m1"
        )
        return Final(entry_id, Status.DONE, "/archive/x", scored)
    assert image.reason is not None
    return Final(entry_id, Status(image.fate), "/q/x", reason=image.reason, detail="why")


@dataclass(frozen=True)
class Row:
    id: int
    tier: int | None  # the rule, computed here from status, rank and reason
    key: tuple[str, ...]
    received_at: datetime
    status: str
    reason: str | None


def _expected(sessions: sessionmaker[Session]) -> Listing:
    """The rule, computed in Python from the raw rows, independently of db/reading.py."""
    with sessions() as session:
        raw = session.execute(
            select(
                WorklistEntry.id,
                WorklistEntry.status,
                WorklistEntry.priority_rank,
                WorklistEntry.reason,
                WorklistEntry.study_instance_uid,
                WorklistEntry.accession_number,
                WorklistEntry.patient_id,
                WorklistEntry.received_at,
            )
        ).all()
    rows = []
    for id_, status, rank, reason, uid, accession, patient, received in raw:
        if status is Status.DONE:
            tier = rank if rank in (0, 2) else 1
        elif status in (Status.QUEUED, Status.PROCESSING):
            tier = 1
        else:
            tier = None if disposition(reason) is Disposition.NOT_FOR_DEVICE else 1
        if uid:
            key: tuple[str, ...] = ("uid", uid, patient or "")
        elif accession:
            key = ("acc", accession, patient or "")
        else:
            key = ("file", str(id_))
        rows.append(Row(id_, tier, key, received, status.value, reason))
    studies: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        studies.setdefault(row.key, []).append(row)

    def images(group: list[Row]) -> tuple[int, ...]:
        read = sorted(
            (r for r in group if r.tier is not None), key=lambda r: (r.tier, r.received_at, r.id)
        )
        by_design = sorted(
            (r for r in group if r.tier is None), key=lambda r: (r.received_at, r.id)
        )
        return tuple(r.id for r in read + by_design)

    read_groups = [g for g in studies.values() if any(r.tier is not None for r in g)]
    read_groups.sort(
        key=lambda g: min((r.tier, r.received_at, r.id) for r in g if r.tier is not None)
    )
    apart_groups = [g for g in studies.values() if all(r.tier is None for r in g)]
    apart_groups.sort(key=lambda g: min((r.received_at, r.id) for r in g))
    listed = []
    for position, group in enumerate(read_groups, start=1):
        ordered = images(group)
        leading = next(r for r in group if r.id == ordered[0])
        listed.append(Entry(position, TIERS[leading.tier], leading.id, ordered))  # type: ignore[index]
    apart = [Entry(None, "apart", images(g)[0], images(g)) for g in apart_groups]
    return listed, apart


@pytest.mark.slow
def test_a_flood_of_5000_is_read_in_one_order_by_every_reader(readers: Readers) -> None:
    rng = random.Random(19)
    sessions = make_session_factory(make_engine(readers.url))
    _store(sessions, rng, _flood(rng, 5000))

    listed, apart = readers.function()
    assert (listed, apart) == _expected(sessions)

    with sessions() as session:
        rows = {e.id: e for e in session.scalars(select(WorklistEntry))}
    # every image exactly once, in the order or apart: none lost, none twice
    shown = [i for entry in listed + apart for i in entry.images]
    assert sorted(shown) == sorted(rows) and len(shown) == 5000
    # no entry is ever ahead of an older entry of its own tier
    for tier in TIERS:
        arrivals = [(rows[e.leading].received_at, e.leading) for e in listed if e.tier == tier]
        assert arrivals == sorted(arrivals), tier
    # every film not analysed for a reason of the image is ahead of every ROUTINE entry
    last_unknown = max(
        e.position for e in listed if rows[e.leading].status in (Status.REJECTED, Status.FAILED)
    )
    first_routine = min(e.position for e in listed if e.tier == "routine")
    assert last_unknown < first_routine  # type: ignore[operator]
    # files not the device's to read never place an entry; inside one they are by design
    for entry in listed:
        assert rows[entry.leading].reading_tier is not None
    assert all(rows[i].reading_tier is None for e in apart for i in e.images)
    assert len(apart) > 50 and sum(len(e.images) > 1 for e in listed) > 200  # it was a flood

    assert_all_agree(readers)


# -- 2. a PA and a lateral DICOM, through the real intake and pipeline ---------------------------

ROUTINE = Prediction(0.05, Label.NORMAL, Priority.ROUTINE, 0.5, "fake-1.0")
URGENT = Prediction(0.93, Label.PNEUMONIA, Priority.URGENT, 0.5, "fake-1.0")
SUSPECT = Prediction(0.31, Label.NORMAL, Priority.SUSPECT, 0.5, "fake-1.0")


def _triage(
    settings: Settings, sessions: sessionmaker[Session], files: list[Path], scored: Prediction
) -> None:
    sent: list[int] = []
    Intake(settings, sessions, lambda ids, origin: sent.extend(ids)).admit_many(
        [(path, Origin.LIVE) for path in files]
    )
    assert len(sent) == len(files)
    scorer = FakeScorer(scored)
    Pipeline(settings, sessions, lambda: scorer).triage(sent, token=f"task-{sent[0]}")


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    from tests.support.settings import folder_settings

    made = folder_settings(tmp_path / "node", database_url, batch_size=4)
    made.inbox.mkdir(parents=True)
    return made


def test_a_pa_and_a_lateral_are_one_entry_a_second_pa_only_raises_it(
    readers: Readers, settings: Settings
) -> None:
    sessions = make_session_factory(make_engine(readers.url))
    jpegs = dataset_jpegs(5)
    study = {"StudyInstanceUID": "1.2.826.0.1.3680043.10.19.1", "PatientID": "CHILD-1"}
    inbox = settings.inbox
    _triage(settings, sessions, [cr_dicom(jpegs[0], inbox / "before.dcm")], SUSPECT)
    lateral = cr_dicom(jpegs[1], inbox / "lateral.dcm", ViewPosition="LL", **study)
    pa = cr_dicom(jpegs[2], inbox / "pa.dcm", ViewPosition="PA", **study)
    _triage(settings, sessions, [lateral, pa], ROUTINE)
    _triage(settings, sessions, [cr_dicom(jpegs[3], inbox / "after.dcm")], ROUTINE)

    def names(listing: Listing) -> list[tuple[str, list[str]]]:
        with sessions() as session:
            by_id = {e.id: e.source_name for e in session.scalars(select(WorklistEntry))}
        return [(e.tier, [by_id[i] for i in e.images]) for e in listing[0]]

    with sessions() as session:
        reasons = {e.source_name: e.reason for e in session.scalars(select(WorklistEntry))}
    assert reasons["lateral.dcm"] == "lateral_view" and reasons["pa.dcm"] is None
    first = assert_all_agree(readers)
    assert names(first) == [
        ("suspect", ["before.dcm"]),
        ("routine", ["pa.dcm", "lateral.dcm"]),  # placed by the PA, the lateral inside
        ("routine", ["after.dcm"]),
    ]
    assert first[1] == []  # the lateral is not a row of its own anywhere
    page = readers.client.get("/worklist").text
    assert "part of the study, not scored by design" in page

    second_pa = cr_dicom(jpegs[4], inbox / "second-pa.dcm", ViewPosition="AP", **study)
    _triage(settings, sessions, [second_pa], URGENT)
    raised = assert_all_agree(readers)
    assert names(raised) == [
        ("urgent", ["second-pa.dcm", "pa.dcm", "lateral.dcm"]),  # up, by the urgent PA
        ("suspect", ["before.dcm"]),
        ("routine", ["after.dcm"]),
    ]

    third_pa = cr_dicom(jpegs[0], inbox / "third-pa.dcm", ViewPosition="PA", **study)
    _triage(settings, sessions, [third_pa], ROUTINE)
    never_down = assert_all_agree(readers)
    assert names(never_down)[0] == (
        "urgent",
        ["second-pa.dcm", "pa.dcm", "third-pa.dcm", "lateral.dcm"],
    )
