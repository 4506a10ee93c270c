"""Only ``tests/datasets.py`` knows where data outside the repository lives, and the committed
sample stays what its README and licence file say it is."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.datasets import REPO, SAMPLE_DIR, ExternalData

#: The before-stop hook's pattern for a dataset film (``person12_bacteria_3``, ``IM-0115-0001``).
FILM = re.compile(r"(person\d+_(bacteria|virus)|IM-\d{4}-\d{4}|NORMAL2-IM).*\.jpe?g$", re.I)


def test_no_test_reads_a_folder_beside_the_repository() -> None:
    """A fresh clone has nothing beside it: a test that reads ``../shared`` itself fails
    there (65 did, issue 21). Data from outside goes through ``tests/datasets.py``, which
    skips with the variable to set."""
    outside = re.compile(r"""["'/]shared["'/]|\.\./shared|REPO\.parent""")
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in (REPO / "tests").rglob("*.py")
        if path.name not in ("datasets.py", "test_datasets.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if outside.search(line)
    ]
    assert offenders == []


def test_the_committed_sample_is_small_licensed_and_listed() -> None:
    films = sorted(p for p in SAMPLE_DIR.rglob("*") if FILM.search(p.name))
    assert 0 < len(films) <= 80  # tens of downsized films, never the dataset
    assert all(p.stat().st_size < 200_000 for p in films)
    licence = (SAMPLE_DIR / "LICENSE.md").read_text()
    assert "CC BY 4.0" in licence and "doi:10.17632/rscbjbr9sj.2" in licence
    assert "Kermany" in (SAMPLE_DIR / "README.md").read_text()
    with (SAMPLE_DIR / "MANIFEST.csv").open(newline="") as f:
        listed = {SAMPLE_DIR / r["split"] / r["label"] / r["filename"] for r in csv.DictReader(f)}
    assert listed == set(films)


def test_a_dataset_skips_when_absent_and_fails_when_named_but_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the variable, a missing dataset skips with the variable to set; with it set to
    a folder that lacks the data (a CI step asked to run on the data), the test fails."""
    data = ExternalData("thing", "CXR_TEST_THING", tmp_path / "absent", "MANIFEST.csv")
    monkeypatch.delenv("CXR_TEST_THING", raising=False)
    assert data.needed.args[0] is True
    with pytest.raises(pytest.skip.Exception, match="set CXR_TEST_THING=<folder>"):
        data.require()
    monkeypatch.setenv("CXR_TEST_THING", str(tmp_path))
    assert data.needed.args[0] is False
    with pytest.raises(pytest.fail.Exception, match=r"CXR_TEST_THING=.*is not there"):
        data.require()
    (tmp_path / "MANIFEST.csv").write_text("")
    assert data.require() == tmp_path


def test_the_tests_that_need_a_dataset_are_marked_for_ci_to_run_them_with_it() -> None:
    """``.ci/run`` runs ``-m external_data`` a second time with the data: a test that skips
    without a dataset must carry the mark, and no other test."""
    module = REPO / "tests" / "model" / "test_dataset.py"
    collect = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"]

    def collected(marks: str) -> set[str]:
        listing = subprocess.run(
            [*collect, "-m", marks, str(module)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return {line.split("::")[1] for line in listing.stdout.splitlines() if "::" in line}

    marked = collected("external_data")
    assert marked == {
        "test_split_keeps_every_patient_and_every_image_on_one_side",
        "test_split_is_stratified_and_about_the_requested_size",
        "test_split_depends_only_on_the_seed",
        "test_the_shipped_models_split_is_rederived_and_another_is_refused",
    }
    assert collected("not external_data").isdisjoint(marked)
    assert collected("not external_data")
