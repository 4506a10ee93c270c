"""Settings: CXR_* environment, an optional file that may not hold secrets, safe defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from worker.settings import Settings, SettingsFileError


def test_defaults_are_embedded_and_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.data_dir == tmp_path / "cxr-triage-data"
    assert settings.inbox == settings.data_dir / "inbox"
    assert settings.database_url == f"sqlite:///{settings.data_dir / 'worklist.sqlite3'}"
    assert settings.broker_url == "filesystem://" and settings.embedded_broker
    assert settings.model_path is None and settings.watch_mode == "inotify"


def test_environment_variables_with_the_prefix_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXR_INBOX", str(tmp_path / "share"))
    monkeypatch.setenv("CXR_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("CXR_WATCH_MODE", "polling")
    monkeypatch.setenv("CXR_MODEL_PATH", str(tmp_path / "model"))
    settings = Settings()
    assert settings.inbox == tmp_path / "share"
    assert not settings.embedded_broker and settings.watch_mode == "polling"
    assert settings.model_path == tmp_path / "model"


def test_a_settings_file_sets_plain_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "cxr.env"
    file.write_text(f"CXR_QUIET_PERIOD_S=7.5\nCXR_ARCHIVE={tmp_path / 'arch'}\n")
    monkeypatch.setenv("CXR_SETTINGS_FILE", str(file))
    monkeypatch.setenv("CXR_QUIET_PERIOD_S", "3")  # the environment beats the file
    settings = Settings()
    assert settings.quiet_period_s == 3.0 and settings.archive == tmp_path / "arch"


@pytest.mark.parametrize(
    "line",
    [
        "CXR_FLOWER_BASIC_AUTH=admin:hunter2",
        "CXR_DATABASE_URL=postgresql+psycopg://cxr:hunter2@db/cxr",
        "CXR_BROKER_URL=redis://:hunter2@redis:6379/0",
        "CXR_DATABASE_URL=postgresql+psycopg://cxr@db/cxr?password=hunter2",
        "CXR_DATABASE_URL=postgresql+psycopg:///cxr?host=db&user=cxr&PASSWORD=hunter2",
        "CXR_DATABASE_URL=postgresql+psycopg://cxr@db/cxr?sslmode=require&sslpassword=hunter2",
        "CXR_BROKER_URL=redis://redis:6379/0?password=hunter2",
    ],
)
def test_a_settings_file_may_not_hold_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    file = tmp_path / "cxr.env"
    file.write_text(line + "\n")
    monkeypatch.setenv("CXR_SETTINGS_FILE", str(file))
    with pytest.raises(SettingsError) as raised:
        Settings()
    assert isinstance(raised.value.__cause__, SettingsFileError)
    assert "hunter2" not in str(raised.value.__cause__)


def test_archive_inside_the_inbox_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="inside the inbox"):
        Settings(inbox=tmp_path, archive=tmp_path / "archive")


def test_visibility_timeout_must_outlast_a_task(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="visibility_timeout"):
        Settings(data_dir=tmp_path, visibility_timeout_s=60, task_time_limit_s=600)


def test_each_folder_and_url_is_one_field_defaulting_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=Path("node") / ".." / "node", inbox=None)  # None: the default
    data = tmp_path / "node"
    assert settings.data_dir == data
    for name in ("inbox", "archive", "quarantine", "outbox", "overlays"):
        assert getattr(settings, name) == data / name, name
    assert settings.database_url == f"sqlite:///{data / 'worklist.sqlite3'}"
    assert not settings.inbox_configured
    named = Settings(data_dir=data, inbox=Path("share"), outbox=Path("~") / "out")
    assert named.inbox == tmp_path / "share" and named.inbox_configured
    assert named.outbox == Path.home() / "out"  # resolved like the others


def test_a_bad_data_dir_is_reported_as_itself(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="data_dir"):
        Settings(data_dir=[1, 2])  # type: ignore[arg-type]
