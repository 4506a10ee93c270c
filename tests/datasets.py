"""Where the tests find real radiographs.

- **The committed sample** (``tests/data/pediatric-cxr-sample``: 28 films of the pediatric-cxr
  dataset, CC BY 4.0, its attribution and licence beside them). Every test that needs real
  films but not the whole dataset reads them from here, in CI and in a fresh clone alike.
- **The full dataset** (``$CXR_TEST_DATASET``, default ``../shared/data/pediatric-cxr`` beside
  the clone) and **the site sample** (``$CXR_TEST_SITE``, default
  ``../shared/data/pediatric-cxr-site``): the tests that measure on them (the shipped model's
  split, its content check, its site figures) skip when they are absent, with a reason that
  names the variable and the folder looked in. ``tests/conftest.py`` sums those skips up in
  one line per missing dataset at the end of the run, and marks those tests
  ``external_data``: ``.ci/run`` runs the whole suite in a fresh clone without the data, then
  ``-m external_data`` again with both variables set. A variable that is set but names a
  folder without the data fails those tests instead of skipping them: a run that was asked
  to use the data must not pass without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "tests" / "data" / "pediatric-cxr-sample"


@dataclass(frozen=True)
class ExternalData:
    """A dataset the repository does not carry: where to look, and how to say it is missing."""

    name: str
    variable: str
    default: Path
    marker_file: str  # present in the folder when the dataset is there

    @property
    def path(self) -> Path:
        env = os.environ.get(self.variable)
        return Path(env).expanduser() if env else self.default.resolve()

    def present(self) -> bool:
        return (self.path / self.marker_file).is_file()

    @property
    def asked_for(self) -> bool:
        """The variable is set: the run was told where the data is, and must not skip."""
        return bool(os.environ.get(self.variable))

    @property
    def skip_reason(self) -> str:
        """Starts with :data:`SKIP_PREFIX` and the dataset's name (the summary counts by it)."""
        return (
            f"{SKIP_PREFIX}{self.name}: not found at {self.path}; "
            f"set {self.variable}=<folder> to run this test"
        )

    @property
    def needed(self) -> pytest.MarkDecorator:
        """A mark: skip the test unless the data is there (reported at the test's own line)."""
        return pytest.mark.skipif(
            not self.present() and not self.asked_for, reason=self.skip_reason
        )

    def require(self) -> Path:
        """The folder; or skip the calling test with :attr:`skip_reason`, or fail it when the
        variable names a folder without the data."""
        if not self.present():
            if self.asked_for:
                pytest.fail(
                    f"{self.variable}={self.path}, but the {self.name} is not there "
                    f"(no {self.marker_file})",
                    pytrace=False,
                )
            pytest.skip(self.skip_reason)
        return self.path


SKIP_PREFIX = "needs the "
FULL_DATASET = ExternalData(
    "full pediatric-cxr dataset",
    "CXR_TEST_DATASET",
    REPO.parent / "shared" / "data" / "pediatric-cxr",
    "MANIFEST.csv",
)
SITE_SAMPLE = ExternalData(
    "site sample",
    "CXR_TEST_SITE",
    REPO.parent / "shared" / "data" / "pediatric-cxr-site",
    "MANIFEST.csv",
)
EXTERNAL = (FULL_DATASET, SITE_SAMPLE)


def sample_files(split: str, label: str) -> list[Path]:
    """The committed sample's films of one folder, sorted by name."""
    files = sorted((SAMPLE_DIR / split / label).glob("*.jpeg"))
    if not files:  # never skip: the sample is part of the repository
        raise FileNotFoundError(f"the committed test sample is missing: {SAMPLE_DIR}")
    return files
