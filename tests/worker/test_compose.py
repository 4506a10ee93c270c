"""docker-compose.yml only runs commands and settings that exist in the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer.main
import yaml

from worker.cli import app
from worker.settings import SETTINGS_FILE_VARIABLE, Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
APP_SERVICES = {"migrate", "worker", "watcher", "flower"}


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
