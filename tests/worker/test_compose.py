"""docker-compose.yml only runs commands and settings that exist in the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from worker.cli import app
from worker.settings import SETTINGS_FILE_VARIABLE, Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
APP_SERVICES = {"migrate", "worker", "watcher", "listen", "deliver", "flower", "web"}
README = COMPOSE.parent / "README.md"


def _services() -> dict[str, dict]:  # type: ignore[type-arg]
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _resolve(argv: list[str]) -> tuple[Any, list[str]]:
    """The (click-compatible) command an argv names, and the tokens left for its options."""
    command: Any = typer.main.get_command(app)
    rest = argv
    while hasattr(command, "get_command") and rest and not rest[0].startswith("-"):
        sub = command.get_command(command.context_class(command), rest[0])
        assert sub is not None, f"no command {rest[0]!r}"
        command, rest = sub, rest[1:]
    return command, rest


def test_every_app_service_runs_an_existing_command_with_existing_options() -> None:
    services = _services()
    assert set(services) >= APP_SERVICES
    for name in APP_SERVICES:
        argv = services[name]["command"]
        assert argv[0] == "cxr-triage", name
        command, rest = _resolve(argv[1:])
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        for token in rest:
            if token.startswith("--"):
                assert token.split("=")[0] in options, f"{name}: {token} is not an option"


def test_every_cxr_variable_is_a_setting_and_secrets_come_from_the_environment() -> None:
    fields = set(Settings.model_fields)
    for name, service in _services().items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if not key.startswith("CXR_"):
                continue
            assert key == SETTINGS_FILE_VARIABLE or key[4:].lower() in fields, f"{name}: {key}"
            if key in ("CXR_DATABASE_URL", "CXR_FLOWER_BASIC_AUTH"):
                assert "${" in str(value), f"{name}: {key} must be interpolated, not written"


def test_redis_never_evicts_and_workers_scale() -> None:
    services = _services()
    assert "noeviction" in services["redis"]["command"]
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale works
    assert all("healthcheck" in services[name] for name in services if name != "migrate")


def test_worker_is_healthy_only_when_its_model_is_warm() -> None:
    """The worker's health check runs ``cxr-triage status --ready`` (an existing command and
    option), given time to load the model before failures count."""
    check = _services()["worker"]["healthcheck"]
    test = check["test"]
    assert test[0] == "CMD-SHELL"
    first = test[1].split("&&")[0].split()
    assert first == ["cxr-triage", "status", "--ready"]
    command, rest = _resolve(first[1:])
    options = {o for p in command.params for o in getattr(p, "opts", [])}
    assert set(rest) <= options
    assert int(str(check["start_period"]).rstrip("s")) >= 60


def test_only_migrate_connects_as_the_owner_and_each_service_has_its_own_login() -> None:
    """Every service connected to PostgreSQL as its superuser (issue 20)."""
    logins = {}
    for name, service in _services().items():
        url = str(service.get("environment", {}).get("CXR_DATABASE_URL", ""))
        if url:
            logins[name] = url.split("://", 1)[1].split(":", 1)[0]
    assert logins == {
        "migrate": "cxr",  # POSTGRES_USER: the owner
        "worker": "worker",
        "watcher": "watcher",
        "deliver": "deliver",
        "web": "web",
    }
    migrate = _services()["migrate"]
    assert migrate["command"] == ["cxr-triage", "db", "upgrade", "--roles"]
    for service in ("watcher", "worker", "deliver", "web"):
        variable = f"CXR_DB_{service.upper()}_PASSWORD"
        assert variable in migrate["environment"]  # the owner creates that login
        assert f"${{{variable}:?" in _services()[service]["environment"]["CXR_DATABASE_URL"]
        assert "POSTGRES_PASSWORD" not in str(_services()[service]["environment"])
    assert "CXR_WEB_PASSWORD" not in _services()["web"]["environment"]  # accounts in the db


def _readme_compose_block() -> str:
    """The README's bash block that starts the compose stack (section "Production")."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    (block,) = [b for b in blocks if "docker compose up -d" in b]
    return block


def test_the_readme_quick_start_sets_every_variable_compose_requires() -> None:
    """The quick start exported POSTGRES_PASSWORD, FLOWER_BASIC_AUTH and CXR_SHARE but not
    CXR_WEB_PASSWORD, which the file requires: ``docker compose up -d`` stopped (issue 21)."""
    required = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", COMPOSE.read_text()))
    assert required >= {"POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH", "CXR_DB_WEB_PASSWORD"}
    block = _readme_compose_block()
    assigned = set(re.findall(r"(?:^|\s)([A-Z_][A-Z0-9_]*)=", block, re.M))
    assert required <= assigned, f"the README's quick start does not set {required - assigned}"
    header = COMPOSE.read_text().split("\nx-", 1)[0]  # the file's own opening comment
    assert all(name in header for name in required), header


def test_the_quick_start_names_every_service_it_starts() -> None:
    """Its comment listed six services where eight start."""
    services = _services()
    default = {name for name, s in services.items() if not s.get("profiles")}
    lines = _readme_compose_block().splitlines()
    (up,) = [line for line in lines if re.match(r"docker compose up -d\s+#", line)]
    named = set(re.findall(r"[a-z]+", up.split("#", 1)[1]))
    assert named == default
    for name, service in services.items():
        for profile in service.get("profiles", []):
            (line,) = [line for line in lines if f"--profile {profile}" in line]
            assert name in line.split("#", 1)[1]


@pytest.mark.parametrize("name", ["watcher", "deliver"])
def test_a_loop_s_health_check_asks_the_process_not_the_database(name: str, tmp_path: Path) -> None:
    """Their health checks ran ``cxr-triage db check``; they now read the loop's heartbeat
    (``status --alive``: an existing command, option and value)."""
    test = _services()[name]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "cxr-triage"
    command, rest = _resolve(test[2:])
    assert rest == ["--alive", name]
    assert any("--alive" in getattr(p, "opts", []) for p in command.params)
    # a value the option takes: not alive here (1), not a usage error (2)
    done = CliRunner().invoke(app, test[2:], env={"CXR_DATA_DIR": str(tmp_path)})
    assert done.exit_code == 1 and "not alive" in done.output, done.output
