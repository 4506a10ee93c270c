"""Packaging: every third-party import is declared, and the image caches its dependencies."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("ingest", "model", "worker", "db", "pacs", "ris", "web")


def _names(specs: list[str]) -> set[str]:
    names = {re.split(r"[\[<>=;! ]", spec, maxsplit=1)[0] for spec in specs}
    return {n.lower().replace("_", "-") for n in names}


def _declared(*, extras: bool = False) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    if extras:
        specs += [s for group in project["optional-dependencies"].values() for s in group]
    return _names(specs)


def _top_levels(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name.split(".")[0] for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return {node.module.split(".")[0]}
    return set()


def _guards_import_error(node: ast.AST) -> bool:
    return isinstance(node, ast.Try) and any(
        isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
        for h in node.handlers
    )


def _imported_top_levels() -> tuple[set[str], set[str]]:
    """(imported unconditionally, imported only inside ``try: ... except ImportError``)."""
    found: set[str] = set()
    optional: set[str] = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            guarded = {
                id(inner)
                for node in ast.walk(tree)
                if _guards_import_error(node)
                for stmt in node.body  # type: ignore[attr-defined]
                for inner in ast.walk(stmt)
            }
            for node in ast.walk(tree):
                (optional if id(node) in guarded else found).update(_top_levels(node))
    ours = set(PACKAGES) | set(sys.stdlib_module_names) | {"__future__"}
    return found - ours, optional - found - ours


def test_every_third_party_import_of_the_packages_is_a_declared_dependency() -> None:
    """A module imported only under ``except ImportError`` (the content check's optional
    non-chest photographs, ``model/nonchest.py``) may come from an extra; any other from the
    dependencies themselves."""
    owners = packages_distributions()
    required, optional = _imported_top_levels()
    undeclared = {}
    for modules, declared in ((required, _declared()), (optional, _declared(extras=True))):
        for module in sorted(modules):
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


def test_the_image_copies_every_package() -> None:
    """The image lacked ``ris`` (imported by the worker) after the RIS outputs landed."""
    copied = {
        m.group(1)
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if (m := re.match(r"COPY (\w+) \1$", line))
    }
    assert set(PACKAGES) <= copied, sorted(set(PACKAGES) - copied)


def test_no_symbolic_link_is_committed() -> None:
    """A worktree's link to a local cache was committed once (the ignore rule matched
    folders only); a clone elsewhere gets a link to nowhere, or to itself."""
    staged = subprocess.run(
        ["git", "ls-files", "--stage"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [line.split("\t", 1)[1] for line in staged if line.startswith("120000")] == []
