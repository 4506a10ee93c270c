"""The product end to end: a share receives a mix of files; the worklist and the folders end
up right. Real watcher, real Celery worker processes, real brokers and databases, the real
classifier; once on Redis + PostgreSQL, once on the embedded default (SQLite + filesystem
broker, ``cxr-triage run``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from db.models import Status
from tests.corpus import (
    copy_jpeg,
    cr_dicom,
    ct_dicom,
    dataset_jpegs,
    lateral_dicom,
    truncated_copy,
)
from tests.processes import CLI, all_final, cli, files_under, rows, running
from tests.support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.tf]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _make_mix(staging: Path) -> dict[str, tuple[Status, str | None]]:
    """Write the input mix; returns the expected (status, reason) by file name."""
    jpegs = dataset_jpegs(6)
    copy_jpeg(jpegs[0], staging / "normal.jpeg")
    copy_jpeg(jpegs[1], staging / "pneumonia.jpeg")
    (staging / "study1").mkdir()
    cr_dicom(jpegs[2], staging / "study1" / "cr1.dcm")
    cr_dicom(jpegs[3], staging / "study1" / "cr2.dcm")
    lateral_dicom(jpegs[4], staging / "lateral.dcm")
    ct_dicom(staging / "ct.dcm")
    truncated_copy(cr_dicom(jpegs[5], staging / "whole.dcm"), staging / "truncated.dcm", 0.5)
    (staging / "whole.dcm").unlink()
    return {
        "normal.jpeg": (Status.DONE, None),
        "pneumonia.jpeg": (Status.DONE, None),
        "study1/cr1.dcm": (Status.DONE, None),
        "study1/cr2.dcm": (Status.DONE, None),
        "lateral.dcm": (Status.REJECTED, "lateral_view"),
        "ct.dcm": (Status.REJECTED, "wrong_sop_class"),
        "truncated.dcm": (Status.REJECTED, "truncated"),
        "slow.dcm": (Status.DONE, None),
    }


def _drop(staging: Path, inbox: Path) -> None:
    """Deliver the mix the way senders do: renames, a duplicate, a slow chunked write."""
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        target = inbox / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target.with_name(target.name + ".part"))
        target.with_name(target.name + ".part").rename(target)
    shutil.copyfile(staging / "normal.jpeg", inbox / "normal-resent.jpeg")  # same bytes
    slow = cr_dicom(dataset_jpegs(8)[7], staging.parent / "slow-source.dcm").read_bytes()
    with (inbox / "slow.dcm").open("wb") as stream:  # never quiet for 1 s while writing
        for start in range(0, len(slow), len(slow) // 6 + 1):
            stream.write(slow[start : start + len(slow) // 6 + 1])
            stream.flush()
            time.sleep(0.3)
    shutil.copyfile(staging.parent / "slow-source.dcm", staging / "slow.dcm")


def _predict(model_dir: Path, files: list[Path], env: dict[str, str]) -> dict[str, dict]:  # type: ignore[type-arg]
    result = subprocess.run(
        [*CLI, "predict", *map(str, files), "--json", "--model", str(model_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    return {Path(e["file"]).name: e for e in json.loads(result.stdout)}


def _check(
    root: Path,
    database_url: str,
    expected: dict,  # type: ignore[type-arg]
    model_dir: Path,
    env: dict[str, str],
    state: Path | None = None,
) -> None:
    staging, inbox, state = root / "staging", root / "inbox", state or root
    found = rows(database_url)
    by_name = {r.source_name: r for r in found}
    assert {n: (r.status, r.reason) for n, r in by_name.items()} == expected
    assert len({r.file_sha256 for r in found}) == len(found) == len(expected)
    for name, row in by_name.items():
        assert row.file_sha256 == _sha(staging / name), name
        assert row.archived_path and Path(row.archived_path).is_file(), name
        assert row.received_at <= row.started_at <= row.finished_at  # type: ignore[operator]
    assert "eligibility_unverified" in by_name["normal.jpeg"].flags
    # the same probabilities as `cxr-triage predict` on the same files
    scored = [n for n, (s, _) in expected.items() if s is Status.DONE]
    reference = _predict(model_dir, [staging / n for n in scored], env)
    for name in scored:
        row, ref = by_name[name], reference[Path(name).name]
        assert row.probability == pytest.approx(ref["probability"], abs=1e-5), name
        assert (row.label, row.priority) == (ref["label"], ref["priority"]), name
        assert row.model_version == ref["model_version"] and row.priority_rank is not None
    # every original in archive or quarantine, exactly once; nothing left in the inbox
    assert files_under(inbox) == []
    archived = [p for p in files_under(state / "archive")]
    quarantined = [p for p in files_under(state / "quarantine") if p.suffix != ".json"]
    assert len(archived) == len(scored)
    assert sorted(p.parent.name for p in quarantined) == sorted(
        ["duplicate", "lateral_view", "wrong_sop_class", "truncated"]
    )
    assert len(archived) + len(quarantined) == len(expected) + 1  # + the resent duplicate
    # the reading list: tiers in order, oldest first within each; the truncated film (unknown
    # risk) read with SUSPECT; the lateral and the CT (not the device's to read) listed apart
    listed = json.loads(cli(["worklist", "--json"], env).stdout)
    assert sorted(r["source_name"] for r in listed) == sorted(expected)
    tiers = ("urgent", "suspect", "routine", "apart")
    leading = [
        (tiers.index(r["tier"]), r["received_at"]) for r in listed if r["entry_id"] == r["id"]
    ]
    assert leading == sorted(leading)
    tier = {r["source_name"]: r["tier"] for r in listed}
    assert (tier["truncated.dcm"], tier["lateral.dcm"], tier["ct.dcm"]) == (
        "suspect",
        "apart",
        "apart",
    )


def _check_results(outbox: Path, overlays: Path, scored: list, unscored: list) -> None:  # type: ignore[type-arg]
    """The deferred results task: one SR and one SC in each scored DICOM's own study, and
    one "not analysed" SR alone in the study of each DICOM the device was to read but did
    not score (issue 19)."""
    import pydicom
    from pydicom.uid import SecondaryCaptureImageStorage

    written = [pydicom.dcmread(p) for p in files_under(outbox)]
    for row in unscored:
        in_study = [ds for ds in written if ds.StudyInstanceUID == row.study_instance_uid]
        assert [ds.Modality for ds in in_study] == ["SR"], row.source_name
        texts = [str(e.value) for e in in_study[0].iterall() if e.keyword == "TextValue"]
        assert any(t.startswith("Not analysed") for t in texts), texts  # the reason in words
    dicom_rows = [r for r in scored if r.source_kind == "dicom"]
    for row in dicom_rows:
        in_study = [ds for ds in written if ds.StudyInstanceUID == row.study_instance_uid]
        assert sorted(ds.Modality == "SR" for ds in in_study) == [False, True]
        assert [ds.SOPClassUID for ds in in_study if ds.Modality != "SR"] == [
            SecondaryCaptureImageStorage
        ]
    assert {p.stem for p in _overlays(overlays)} == {r.file_sha256 for r in scored}
    # and the review page's heatmap layer and thumbnail of each
    layers = {p.name for p in files_under(overlays)} - {p.name for p in _overlays(overlays)}
    assert layers == {
        f"{r.file_sha256}.{kind}" for r in scored for kind in ("heat.png", "thumb.webp")
    }


def _overlays(folder: Path) -> list[Path]:
    """The blended overlays (``<sha>.png``), without the page's layers and thumbnails."""
    return [p for p in files_under(folder) if p.suffixes == [".png"]]


@pytest.mark.services
def test_redis_and_postgresql_with_two_worker_processes(
    tmp_path: Path, pg_url: str, redis_url: str, model_dir: Path
) -> None:
    from tests.processes import service_env

    env = service_env(tmp_path, pg_url, redis_url, CXR_QUIET_PERIOD_S="1.0")
    (tmp_path / "staging").mkdir()
    (tmp_path / "inbox").mkdir()
    expected = _make_mix(tmp_path / "staging")
    env["CXR_MODEL_PATH"] = str(model_dir)
    cli(["db", "upgrade"], env)
    logs = [tmp_path / "worker.log", tmp_path / "watch.log"]
    with (
        running(["worker", "--concurrency", "2"], env, logs[0]),
        running(["watch"], env, logs[1]),
    ):
        _drop(tmp_path / "staging", tmp_path / "inbox")
        wait_until(all_final(pg_url, len(expected)), 300, "every row final", logs)
        wait_until(lambda: files_under(tmp_path / "inbox") == [], 60, "an empty inbox", logs)
        scored = [r for r in rows(pg_url) if r.status is Status.DONE]
        dicoms = [r for r in scored if r.source_kind == "dicom"]
        # the truncated CR is the device's to read but was not scored: a "not analysed" SR
        unscored = [r for r in rows(pg_url) if r.source_name == "truncated.dcm"]
        outbox, overlays = tmp_path / "data" / "outbox", tmp_path / "data" / "overlays"
        try:
            wait_until(
                lambda: (
                    len(files_under(outbox)) == 2 * len(dicoms) + len(unscored)
                    and len(_overlays(overlays)) == len(scored)
                    and len(files_under(overlays)) == 3 * len(scored)
                ),
                120,
                "an SR + SC per scored DICOM and an overlay per scored file",
                logs,
            )
        except AssertionError as failed:  # what was there instead, for the next reader
            there = [p.relative_to(tmp_path / "data") for p in files_under(tmp_path / "data")]
            raise AssertionError(
                f"{failed}\n{len(dicoms)} scored DICOM(s), {len(scored)} scored; under data/: "
                f"{sorted(map(str, there))}"
            ) from None
    _check(tmp_path, pg_url, expected, model_dir, env)
    _check_results(outbox, overlays, scored, unscored)


def test_embedded_default_in_one_command(tmp_path: Path, model_dir: Path) -> None:
    """`cxr-triage run INBOX` with nothing but defaults: SQLite and a filesystem broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(CXR_MODEL_PATH=str(model_dir), CXR_QUIET_PERIOD_S="1.0", PYTHONUNBUFFERED="1")
    (tmp_path / "staging").mkdir()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    expected = _make_mix(tmp_path / "staging")
    data = tmp_path / "cxr-triage-data"
    database_url = f"sqlite:///{data / 'worklist.sqlite3'}"
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*CLI, "run", str(inbox)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: (data / "worklist.sqlite3").exists(), 60, "the database", [log])
        _drop(tmp_path / "staging", inbox)
        wait_until(all_final(database_url, len(expected)), 300, "every row final", [log])
        wait_until(lambda: files_under(inbox) == [], 60, "an empty inbox", [log])
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
        code = process.wait(timeout=120)
    assert code == 0, log.read_text()[-3000:]
    # both cores, as in server mode (the worker's banner is in the log file, not on stdout)
    assert "concurrency: 2 (prefork)" in (data / "logs" / "run.log").read_text()
    assert f"files seen:  {len(expected) + 1}" in log.read_text()  # + the resent duplicate
    env["CXR_DATA_DIR"] = str(data)
    env["CXR_INBOX"] = str(inbox)
    # archive and quarantine default to folders under the data directory
    _check(tmp_path, database_url, expected, model_dir, env, state=data)
