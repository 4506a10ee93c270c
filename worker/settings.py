"""One settings object for every process: environment variables ``CXR_*``, optionally a file.

Precedence, highest first: values passed in code, the environment, the settings file named by
``CXR_SETTINGS_FILE`` (dotenv syntax, ``CXR_`` names), the defaults below.

The defaults run everything on one laptop without servers: a SQLite worklist and kombu's
``filesystem://`` broker under ``data_dir``. Production points ``CXR_DATABASE_URL`` at
PostgreSQL and ``CXR_BROKER_URL`` at Redis; no code changes.

Secrets come only from the environment: the settings file may not set the Flower credentials
nor a URL that carries a password (:class:`SettingsFileSource` refuses them).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "CXR_"
SETTINGS_FILE_VARIABLE = "CXR_SETTINGS_FILE"
SECRET_FIELDS = frozenset({"flower_basic_auth", "web_password", "web_session_secret"})
URL_FIELDS = frozenset({"database_url", "broker_url"})
#: Query parameters that carry a password in database and broker URLs (libpq's
#: ``password``/``sslpassword``, SQLAlchemy's and kombu's pass-through options).
SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "pass", "sslpassword", "secret"})

WatchMode = Literal["inotify", "polling"]


class SettingsFileError(ValueError):
    """The settings file tried to set a secret; secrets come only from the environment."""


class Settings(BaseSettings):
    """Where files come from and go to, which database and broker, and how to watch."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # -- folders
    data_dir: Path = Field(
        default=Path("cxr-triage-data"),
        description="Local state: SQLite worklist, embedded broker, default inbox/archive.",
    )
    inbox: Path | None = Field(default=None, description="Watched folder (default data_dir/inbox)")
    archive: Path | None = Field(default=None, description="Scored originals (data_dir/archive)")
    quarantine: Path | None = Field(
        default=None, description="Rejected/failed originals with a JSON sidecar"
    )

    # -- services
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/worklist.sqlite3"
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker; default filesystem:// under data_dir/broker"
    )
    visibility_timeout_s: int = Field(
        default=1800,
        description=(
            "Redis redelivers an unacknowledged task after this long; it must exceed the "
            "longest task (task_time_limit_s) plus its wait in a worker's prefetch slot."
        ),
    )
    task_time_limit_s: int = Field(default=600, description="A task is killed after this long")

    # -- model. Thresholds and calibration live in the model card beside the weights: a new
    # operating point is a new model directory, so every row says which one scored it.
    model_path: Path | None = Field(default=None, description="None = the shipped model")
    batch_size: int = Field(default=8, ge=1, le=64, description="Images scored per model call")

    # -- watching
    watch_mode: WatchMode = Field(
        default="inotify", description="inotify for local disks, polling for SMB/NFS shares"
    )
    poll_interval_s: float = Field(default=2.0, gt=0, description="Polling observer interval")
    rescan_interval_s: float = Field(
        default=60.0, gt=0, description="Full rescan of the inbox: the source of truth"
    )
    quiet_period_s: float = Field(
        default=2.0, ge=0, description="Size and mtime unchanged this long = the copy is done"
    )
    requeue_after_s: float = Field(
        default=900.0,
        gt=0,
        description="A row still queued/processing this long gets its task sent again",
    )
    lease_s: float = Field(
        default=20.0,
        ge=2,
        description=(
            "A claimed row's lease: the worker node renews it every lease_s/4 while the task "
            "runs; once expired (the node died), another worker takes the row over"
        ),
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        description="Claims of a row before it is failed as too_many_attempts (a poison file)",
    )

    # -- worker and Flower
    worker_concurrency: int = Field(default=2, ge=1, description="Worker processes per machine")
    model_threads: int | None = Field(
        default=None,
        ge=1,
        description="TensorFlow threads per worker process (default: cores / concurrency)",
    )
    worker_max_memory_per_child_kb: int = Field(
        default=3_000_000, description="Recycle a worker process above this resident size"
    )
    flower_port: int = 5555
    flower_basic_auth: SecretStr | None = Field(
        default=None, description="user:password[,user2:password2] (environment only)"
    )
    log_level: str = "INFO"

    # -- results back to PACS (pacs/): DICOM SR + SC per scored DICOM, optionally C-STORE
    outbox: Path | None = Field(default=None, description="SR/SC files (data_dir/outbox)")
    overlays: Path | None = Field(
        default=None, description="Heatmap overlay PNGs for the review page (data_dir/overlays)"
    )
    pacs_host: str | None = Field(default=None, description="C-STORE SR/SC here; None = don't")
    pacs_port: int = Field(default=104, ge=1, le=65535)
    pacs_ae_title: str = Field(default="PACS", max_length=16, description="Called AE title")
    pacs_calling_ae_title: str = Field(default="CXR_TRIAGE", max_length=16)
    pacs_timeout_s: float = Field(default=30.0, gt=0, description="Connect/ACSE/DIMSE timeout")
    results_batch_size: int = Field(
        default=32, ge=1, le=1000, description="Result objects sent over one association"
    )
    results_retry_max_s: float = Field(
        default=300.0, ge=1, description="Longest wait between delivery attempts (backoff cap)"
    )
    results_retention_h: float = Field(
        default=72.0, gt=0, description="Stored SR/SC files leave the outbox after this"
    )

    # -- DICOM receiver (pacs/receiver.py, ``cxr-triage listen``): a Storage SCP into the inbox
    listen_ae_title: str = Field(default="CXR_TRIAGE", min_length=1, max_length=16)
    listen_port: int = Field(default=11112, ge=1, le=65535)
    listen_host: str = Field(default="0.0.0.0", description="Address the receiver binds")
    listen_allowed_ae_titles: str = Field(
        default="", description="Comma-separated calling AE titles allowed; empty = any"
    )

    # -- review page (web/): one reader account from the environment
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8080, ge=1, le=65535)
    web_username: str = Field(default="reader", max_length=64)
    web_password: SecretStr | None = Field(
        default=None, description="The web page refuses to start without it (environment only)"
    )
    web_session_secret: SecretStr | None = Field(
        default=None, description="Signs login cookies; default: random per start"
    )

    web_secure_cookies: bool = Field(
        default=False, description="Login cookie over HTTPS only (set when behind TLS)"
    )
    web_trusted_proxies: str = Field(
        default="",
        description="Addresses whose X-Forwarded-For is believed (comma-separated); none",
    )

    # -- worker metrics (worker/metrics.py): Prometheus text format on this port
    metrics_port: int | None = Field(default=9808, ge=1, le=65535, description="None = off")
    metrics_address: str = Field(
        default="127.0.0.1", description="Where /metrics listens; 0.0.0.0 opens it to the network"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        settings_file = os.environ.get(SETTINGS_FILE_VARIABLE)
        if settings_file:
            sources.append(SettingsFileSource(settings_cls, Path(settings_file)))
        return tuple(sources)

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        self.inbox = (self.inbox or self.data_dir / "inbox").expanduser().resolve()
        self.archive = (self.archive or self.data_dir / "archive").expanduser().resolve()
        self.quarantine = (self.quarantine or self.data_dir / "quarantine").expanduser().resolve()
        for name in ("archive", "quarantine"):
            target: Path = getattr(self, name)
            if target == self.inbox or target.is_relative_to(self.inbox):
                raise ValueError(f"{name} ({target}) must not lie inside the inbox")
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'worklist.sqlite3'}"
        if self.broker_url is None:
            self.broker_url = "filesystem://"
        if self.visibility_timeout_s <= self.task_time_limit_s:
            raise ValueError("visibility_timeout_s must be longer than task_time_limit_s")
        return self

    # Typed accessors: after validation these are never None.
    @property
    def inbox_dir(self) -> Path:
        assert self.inbox is not None
        return self.inbox

    @property
    def archive_dir(self) -> Path:
        assert self.archive is not None
        return self.archive

    @property
    def quarantine_dir(self) -> Path:
        assert self.quarantine is not None
        return self.quarantine

    @property
    def db_url(self) -> str:
        assert self.database_url is not None
        return self.database_url

    @property
    def broker(self) -> str:
        assert self.broker_url is not None
        return self.broker_url

    @property
    def embedded_broker(self) -> bool:
        """True for the no-server brokers (filesystem, SQLAlchemy) that one machine shares."""
        return self.broker.startswith(("filesystem://", "sqla+"))

    @property
    def broker_folder(self) -> Path:
        return self.data_dir / "broker"

    @property
    def outbox_dir(self) -> Path:
        return (self.outbox or self.data_dir / "outbox").expanduser().resolve()

    @property
    def overlay_dir(self) -> Path:
        return (self.overlays or self.data_dir / "overlays").expanduser().resolve()


class SettingsFileSource(DotEnvSettingsSource):
    """A dotenv-syntax settings file that may set anything except secrets."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        if not path.is_file():
            raise SettingsFileError(f"{SETTINGS_FILE_VARIABLE} names {path}, which is not a file")
        super().__init__(settings_cls, env_file=path, env_prefix=ENV_PREFIX)
        self.path = path

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        value, key, complex_ = super().get_field_value(field, field_name)
        if value is not None:
            if field_name in SECRET_FIELDS:
                raise SettingsFileError(
                    f"{self.path}: {key} is a secret; set it in the environment instead"
                )
            if field_name in URL_FIELDS and url_carries_password(str(value)):
                raise SettingsFileError(
                    f"{self.path}: {key} carries a password; set it in the environment instead"
                )
        return value, key, complex_


def url_carries_password(url: str) -> bool:
    """True when ``url`` has a password in its authority (``user:pw@``) or its query
    (``?password=...``, as libpq and SQLAlchemy accept)."""
    parts = urlsplit(url)
    if parts.password:
        return True
    return any(key.lower() in SECRET_QUERY_KEYS for key, _ in parse_qsl(parts.query))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once. Tests and the CLI call ``get_settings.cache_clear()``
    after changing the environment."""
    return Settings()
