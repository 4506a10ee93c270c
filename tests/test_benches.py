"""Every bench still starts: its imports resolve and its command line parses (``--help``).

The benches print the figures the README quotes; a rename elsewhere (issue 23's) broke two
of them silently (an import from the tests that had moved, an argument the web app no longer
takes), found only when the figures were re-measured. Their call-time paths are exercised by
running them; this catches the import-time half at every CI run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.datasets import REPO

BENCHES = sorted(
    path for path in (REPO / "bench").glob("bench_*.py") if "__main__" in path.read_text()
)


@pytest.mark.parametrize("bench", BENCHES, ids=[path.stem for path in BENCHES])
def test_the_bench_starts_and_explains_itself(bench: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(bench), "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout.lower()
