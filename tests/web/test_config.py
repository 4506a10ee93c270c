"""The page refuses to start without a usable password, from the settings and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from web.config import WebConfig, WebConfigError
from worker.cli import app
from worker.cli.web_commands import web_config
from worker.settings import Settings, get_settings


def config(**overrides: object) -> WebConfig:
    values: dict[str, object] = {
        "database_url": "sqlite://",
        "archive_dir": Path("/tmp/a"),
        "overlay_dir": Path("/tmp/o"),
        "username": "reader",
        "password": "long enough",
    }
    values.update(overrides)
    return WebConfig(**values)  # type: ignore[arg-type]


def test_no_or_short_password_or_bad_name_is_refused():
    with pytest.raises(WebConfigError, match="CXR_WEB_PASSWORD"):
        config(password="")
    with pytest.raises(WebConfigError, match="at least"):
        config(password="short")
    with pytest.raises(WebConfigError, match="USERNAME"):
        config(username="a:b")
    assert "long enough" not in repr(config())


def test_config_comes_from_the_settings(tmp_path: Path):
    settings = Settings(
        data_dir=tmp_path, web_username="dr.x", web_password="s3cret-pass", web_port=9000
    )
    built = web_config(settings)
    assert (built.username, built.password) == ("dr.x", "s3cret-pass")
    assert built.overlay_dir == tmp_path.resolve() / "overlays"
    assert built.archive_dir == settings.archive_dir


def test_cli_refuses_to_start_without_a_password(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CXR_WEB_PASSWORD", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["web"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "CXR_WEB_PASSWORD" in result.output


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
