"""The page refuses to start without a usable password, from the settings and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from db import migrate
from web.config import WebConfig, WebConfigError
from worker.cli import app
from worker.cli.web_commands import web_config
from worker.settings import Settings, get_settings


def config(**overrides: object) -> WebConfig:
    values: dict[str, object] = {
        "database_url": "sqlite://",
        "archive_dir": Path("/tmp/a"),
        "overlay_dir": Path("/tmp/o"),
    }
    values.update(overrides)
    return WebConfig(**values)  # type: ignore[arg-type]


def test_a_remote_user_header_needs_a_named_trusted_proxy():
    with pytest.raises(WebConfigError, match="CXR_WEB_TRUSTED_PROXIES"):
        config(remote_user_header="X-Remote-User")
    with pytest.raises(WebConfigError, match="not '\\*'"):
        config(remote_user_header="X-Remote-User", trusted_proxies="*")
    assert config(remote_user_header="X-Remote-User", trusted_proxies="10.0.0.5")
    with pytest.raises(WebConfigError, match="SESSION_SECRET"):
        config(session_secret="short")


def test_config_comes_from_the_settings(tmp_path: Path):
    settings = Settings(
        data_dir=tmp_path,
        web_port=9000,
        web_trusted_proxies=" 10.0.0.5 ",
        web_remote_user_header="X-Remote-User",
    )
    built = web_config(settings)
    assert (built.trusted_proxies, built.remote_user_header) == ("10.0.0.5", "X-Remote-User")
    assert built.overlay_dir == tmp_path.resolve() / "overlays"
    assert built.archive_dir == settings.archive


def _web(tmp_path: Path, monkeypatch, password: str | None):
    url = f"sqlite:///{tmp_path / 'worklist.sqlite3'}"
    migrate.upgrade(url)
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CXR_DATABASE_URL", url)
    if password is None:
        monkeypatch.delenv("CXR_WEB_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("CXR_WEB_PASSWORD", password)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, ["web"])
    finally:
        get_settings.cache_clear()


def test_cli_refuses_to_start_without_any_account(tmp_path: Path, monkeypatch):
    result = _web(tmp_path, monkeypatch, None)
    assert result.exit_code == 2
    assert "no enabled account" in result.output and "user add" in result.output


def test_cli_refuses_a_shared_password_shorter_than_it_ever_allowed(tmp_path, monkeypatch):
    result = _web(tmp_path, monkeypatch, "short")
    assert result.exit_code == 2
    assert "at least 8 characters" in result.output


def test_the_settings_file_may_not_hold_the_web_password(tmp_path: Path, monkeypatch):
    from pydantic_settings import SettingsError

    from worker.settings import SettingsFileError

    settings_file = tmp_path / "cxr.env"
    settings_file.write_text("CXR_WEB_PASSWORD=in-a-file-is-wrong\n")
    monkeypatch.setenv("CXR_SETTINGS_FILE", str(settings_file))
    monkeypatch.delenv("CXR_WEB_PASSWORD", raising=False)
    with pytest.raises(SettingsError) as raised:
        Settings(data_dir=tmp_path)
    assert isinstance(raised.value.__cause__, SettingsFileError)
    assert "secret" in str(raised.value.__cause__)
