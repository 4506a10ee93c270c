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


def test_the_readme_names_every_variable_the_tests_read() -> None:
    """``CXR_TEST_DATASET`` and friends existed, but the README never named them (issue 21)."""
    used = set()
    for path in (REPO / "tests").rglob("*.py"):
        text = path.read_text()
        used |= set(re.findall(r"environ\.get\(\s*\"(CXR_[A-Z_]+)\"", text))
        used |= set(re.findall(r"\"(CXR_TEST_[A-Z_]+)\",\s*$", text, re.M))  # tests/datasets.py
    assert {"CXR_TEST_DATASET", "CXR_TEST_SITE", "CXR_TEST_REDIS_DB"} <= used
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Run the tests", 1)[1].split("\n## ", 1)[0]
    missing = sorted(name for name in used if f"`{name}`" not in section)
    assert missing == [], f"README, Run the tests: name {missing}"


def test_the_first_run_sample_shows_no_machine_s_path() -> None:
    """The sample output showed ``/work/fresh1/...``, the folder it was made in (issue 21)."""
    readme = (REPO / "README.md").read_text()
    sample = readme.split("What the first command printed", 1)[1].split("```text\n", 1)[1]
    sample = sample.split("```", 1)[0]
    assert "logs: cxr-triage-data/logs/run.log" in sample
    assert "cxr-triage running: watching inbox" in sample
    assert not re.search(r"(^|\s)/(work|home|tmp|root|Users)\b", sample, re.M), sample
