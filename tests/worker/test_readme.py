"""The README's two commands are the ones CI and newcomers actually run."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = next(c for c in readme_commands() if "pytest" in c)
    assert test_command in (REPO / ".ci" / "run").read_text()
    for step in (
        "pip install -c constraints.txt -e '.[dev]'",
        "ruff check",
        "ruff format --check",
        "mypy",
        "lint-imports",
    ):
        assert step in test_command


def test_the_first_command_runs_the_embedded_default_on_a_folder() -> None:
    first = readme_commands()[0]
    assert "pip install -c constraints.txt -e ." in first and "cxr-triage run" in first
    assert "cxr-triage worklist" in first
