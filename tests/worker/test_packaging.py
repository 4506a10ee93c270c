"""Packaging: every third-party import is declared, and the image caches its dependencies."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("ingest", "model", "worker", "db", "pacs", "web")


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[\[<>=;! ]", spec, maxsplit=1)[0] for spec in project["dependencies"]}
    return {n.lower().replace("_", "-") for n in names}


def _imported_top_levels() -> set[str]:
    found: set[str] = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found - set(PACKAGES) - set(sys.stdlib_module_names) - {"__future__"}


def test_every_third_party_import_of_the_packages_is_a_declared_dependency() -> None:
    owners = packages_distributions()
    declared = _declared()
    undeclared = {}
    for module in sorted(_imported_top_levels()):
        distributions = {d.lower().replace("_", "-") for d in owners.get(module, [])}
        # tensorflow is declared per machine (tensorflow-cpu on x86_64)
        if distributions and not distributions & (declared | {"tensorflow"}):
            undeclared[module] = sorted(distributions)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_constraints_pin_every_declared_dependency() -> None:
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    missing = {d for d in _declared() - pinned if d not in {"tensorflow"}}
    assert not missing, f"declared but not pinned in constraints.txt: {sorted(missing)}"


def test_dockerfile_installs_dependencies_before_copying_the_sources() -> None:
    lines = (REPO / "Dockerfile").read_text().splitlines()
    install = next(i for i, line in enumerate(lines) if "-r requirements.txt" in line)
    first_source = next(i for i, line in enumerate(lines) if re.match(r"COPY (ingest|model)", line))
    assert install < first_source
    assert any("--no-deps ." in line for line in lines[first_source:])
