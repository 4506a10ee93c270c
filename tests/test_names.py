"""Names that say what they are: no public class, and no module of a rule the packages share,
named twice (issue 23: three classes called ``Scored``, ``drift.py`` in four packages)."""

from __future__ import annotations

import ast
from collections import defaultdict

from tests.datasets import REPO

PACKAGES = ("ingest", "model", "worker", "db", "pacs", "ris", "web")

#: Module names that stay in two packages, and why: the table's queries in ``db``, the
#: thread that uses them in ``worker``; the same outbox for two families of objects; the web
#: app and the CLI's root. Anything else named twice is a clash to resolve.
SHARED_MODULE_NAMES = {
    "leadership.py": "db: the leadership lease row; worker: the elector thread",
    "outbox.py": "pacs: the SR/SC files; ris: the HL7/FHIR messages",
    "app.py": "web: the FastAPI app; worker/cli: the Typer root",
}


def _modules() -> list[str]:
    return [
        str(path.relative_to(REPO))
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
    ]


def test_no_two_public_classes_share_a_name() -> None:
    """``import Scored as ScoredRow`` is how a clash shows; a reader should not need it."""
    where: dict[str, list[str]] = defaultdict(list)
    for module in _modules():
        tree = ast.parse((REPO / module).read_text(), module)
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where[node.name].append(module)
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}


def test_no_module_name_means_two_things() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for module in _modules():
        name = module.rsplit("/", 1)[-1]
        if name != "__init__.py":
            where[name].append(module)
    clashes = {
        name: paths
        for name, paths in where.items()
        if len(paths) > 1 and name not in SHARED_MODULE_NAMES
    }
    assert clashes == {}
