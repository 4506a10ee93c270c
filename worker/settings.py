"""One settings object for every process: environment variables ``CXR_*``, optionally a file.

Precedence, highest first: values passed in code, the environment, the settings file named by
``CXR_SETTINGS_FILE`` (dotenv syntax, ``CXR_`` names), the defaults below.

The defaults run everything on one laptop without servers: a SQLite worklist and kombu's
``filesystem://`` broker under ``data_dir``. Production points ``CXR_DATABASE_URL`` at
PostgreSQL and ``CXR_BROKER_URL`` at Redis; no code changes.

Secrets come only from the environment: the settings file may not set the Flower credentials
nor a URL that carries a password (:class:`SettingsFileSource` refuses them).

One name per setting: the field is what the code reads and, upper-cased after ``CXR_``, the
variable an operator sets. The folders and URLs that default to a place under ``data_dir``
are filled in when the settings are read, so ``settings.inbox`` is always a resolved path
and ``settings.database_url`` always a URL, and ``settings.umask`` is the number (written in
octal in the variable). No accessor stands beside a field under another name, and no
variable was renamed, so there is no deprecated alias: every documented ``CXR_*`` name
(README, docker-compose.yml, deploy/) works as before.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "CXR_"
SETTINGS_FILE_VARIABLE = "CXR_SETTINGS_FILE"
#: The database passwords of the service logins ``cxr-triage db roles`` creates (db/roles.py).
DB_LOGIN_PASSWORD_FIELDS = {
    "watcher": "db_watcher_password",
    "worker": "db_worker_password",
    "deliver": "db_deliver_password",
    "web": "db_web_password",
}
SECRET_FIELDS = frozenset(
    {
        "flower_basic_auth",
        "web_password",
        "web_session_secret",
        "fhir_token",
        *DB_LOGIN_PASSWORD_FIELDS.values(),
    }
)
URL_FIELDS = frozenset({"database_url", "broker_url", "fhir_base_url"})
#: Query parameters that carry a password in database and broker URLs (libpq's
#: ``password``/``sslpassword``, SQLAlchemy's and kombu's pass-through options).
SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "pass", "sslpassword", "secret"})

WatchMode = Literal["inotify", "polling"]
Hl7Charset = Literal["UNICODE UTF-8", "8859/1", "ASCII"]  # MSH-18, HL7 table 0211


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
    inbox: Path = Field(
        default_factory=lambda data: _under_data_dir(data, "inbox"),
        description="Watched folder (default data_dir/inbox)",
    )
    archive: Path = Field(
        default_factory=lambda data: _under_data_dir(data, "archive"),
        description="Scored originals (data_dir/archive)",
    )
    quarantine: Path = Field(
        default_factory=lambda data: _under_data_dir(data, "quarantine"),
        description="Rejected/failed originals with a JSON sidecar (data_dir/quarantine)",
    )

    # -- services
    database_url: str = Field(
        default_factory=lambda data: f"sqlite:///{_under_data_dir(data, 'worklist.sqlite3')}",
        description="SQLAlchemy URL; default sqlite:///<data_dir>/worklist.sqlite3",
    )
    broker_url: str = Field(
        default="filesystem://",
        description="Celery broker; default filesystem:// under data_dir/broker",
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
    watcher_lease_s: float = Field(
        default=15.0,
        ge=3,
        description=(
            "The active watcher's lease: renewed every watcher_lease_s/4; a standby watcher "
            "takes over once it has expired (the active one died)"
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
    umask: int = Field(
        default=0o077,
        ge=0,
        le=0o777,
        description=(
            "File creation mask of every cxr-triage process, in octal as umask(1) writes it "
            "(CXR_UMASK=0077; an int in code): 0077 = files 0600, "
            "folders 0700 (only the service account reads archive, quarantine, outbox, "
            "overlays and the SQLite worklist); 0027 lets a service group read them"
        ),
    )

    # -- results back to PACS (pacs/): DICOM SR + SC per scored DICOM, optionally C-STORE
    outbox: Path = Field(
        default_factory=lambda data: _under_data_dir(data, "outbox"),
        description="SR/SC files (data_dir/outbox)",
    )
    overlays: Path = Field(
        default_factory=lambda data: _under_data_dir(data, "overlays"),
        description="Heatmap overlay PNGs for the review page (data_dir/overlays)",
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
    results_give_up_after_h: float = Field(
        default=72.0,
        gt=0,
        description=(
            "Temporary delivery failures (PACS down, out of resources) are retried this long "
            "after an object's first try (or its re-send), then it is failed"
        ),
    )
    results_claim_lease_s: float = Field(
        default=30.0,
        ge=3,
        le=600,
        description=(
            "A deliverer's claim on a batch, renewed every third of it while in flight: the "
            "objects of a deliverer that died are sent by another after at most this long"
        ),
    )
    results_scored: bool = Field(
        default=True, description="SR and SC into the study of every scored DICOM"
    )
    results_not_analysed: bool = Field(
        default=True,
        description=(
            "A 'not analysed' SR, with the reason, into the study of every DICOM that was "
            "the device's to read (CR/DX frontal chest) but was not scored"
        ),
    )
    catchup_hours: float = Field(
        default=0.0,
        ge=0,
        le=168,
        description=(
            "0 = off. Else the deliverer asks the PACS (C-FIND) for CR/DX studies of the last "
            "this many hours that never reached the worklist, and C-MOVEs them to the listener"
        ),
    )
    catchup_interval_s: float = Field(
        default=300.0, ge=10, description="How often the catch-up asks the PACS"
    )
    catchup_move_destination: str | None = Field(
        default=None,
        max_length=16,
        description="C-MOVE destination AE title (default: CXR_LISTEN_AE_TITLE)",
    )

    # -- results to the RIS (ris/): HL7 v2 ORU^R01 over MLLP and/or a FHIR R4 DiagnosticReport
    # per exam with an accession number, on the SR/SC's delivery schedule (results_*).
    # README "RIS integration".
    ris_host: str | None = Field(
        default=None, description="MLLP: an ORU^R01 per exam to this host; None = don't"
    )
    ris_port: int = Field(default=2575, ge=1, le=65535, description="The RIS's MLLP port")
    ris_sending_application: str = Field(
        default="CXR_TRIAGE", max_length=227, description="MSH-3 (HD: may hold ^ components)"
    )
    ris_sending_facility: str = Field(default="", max_length=227, description="MSH-4")
    ris_receiving_application: str = Field(default="RIS", max_length=227, description="MSH-5")
    ris_receiving_facility: str = Field(default="", max_length=227, description="MSH-6")
    ris_processing_id: Literal["P", "T", "D"] = Field(
        default="P", description="MSH-11: P production, T training/test, D debugging"
    )
    ris_charset: Hl7Charset = Field(
        default="UNICODE UTF-8",
        description="MSH-18: the message's character set (ASCII: MSH-18 left empty)",
    )
    ris_connect_timeout_s: float = Field(default=10.0, gt=0, description="MLLP connect timeout")
    ris_ack_timeout_s: float = Field(
        default=30.0, gt=0, description="Wait this long for each message's ACK, then retry it"
    )
    ris_reconnect_max_s: float = Field(
        default=10.0,
        ge=1,
        le=600,
        description=(
            "An unreachable RIS (or FHIR server) is tried again at most this far apart; "
            "once it answers, the waiting messages go urgent first"
        ),
    )
    fhir_base_url: str | None = Field(
        default=None, description="FHIR R4 server: a DiagnosticReport per exam; None = don't"
    )
    fhir_token: SecretStr | None = Field(
        default=None, description="Bearer token for the FHIR server (environment only)"
    )
    fhir_timeout_s: float = Field(default=30.0, gt=0, description="FHIR connect/answer timeout")
    fhir_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle for an https FHIR server (default: system CAs)"
    )
    fhir_patient_id_system: str = Field(
        default="", description="Identifier system URI of Patient ID (e.g. urn:oid:<MRN OID>)"
    )
    fhir_accession_system: str = Field(
        default="", description="Identifier system URI of accession numbers"
    )

    # -- DICOM receiver (pacs/receiver.py, ``cxr-triage listen`` / ``run --listen``): a
    # Storage SCP into the inbox. README "DICOM node setup"; docs/conformance-receiver.md.
    listen_ae_title: str = Field(default="CXR_TRIAGE", min_length=1, max_length=16)
    listen_port: int = Field(default=11112, ge=1, le=65535)
    listen_host: str = Field(default="0.0.0.0", description="Address the receiver binds")
    listen_peers: str = Field(
        default="",
        description=(
            "Known senders, comma-separated AE_TITLE@host (host: an address, a CIDR network "
            "or a name; AE title * for any title from that host). Empty: this machine only"
        ),
    )
    listen_allow_any_peer: bool = Field(
        default=False,
        description="Accept any host under any AE title (a warning at every start); test only",
    )
    listen_allowed_ae_titles: str = Field(
        default="",
        description="Replaced by CXR_LISTEN_PEERS (titles bound to hosts); refused when set",
    )
    listen_max_object_bytes: int = Field(
        # ingest.limits.MAX_PIXELS at 16 bits (200 MB) and 56 MiB of header: the largest
        # image ingest accepts. Kept a literal: settings must not import ingest (numpy).
        default=200_000_000 + 56 * 1024 * 1024,
        ge=1024,
        description="A C-STORE data set past this many bytes aborts its association",
    )
    listen_max_associations: int = Field(
        default=16, ge=1, le=1000, description="Open connections, all peers together"
    )
    listen_max_associations_per_peer: int = Field(
        default=4, ge=1, le=1000, description="Open connections from one host"
    )
    listen_pdu_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="One PDU (at most CXR_LISTEN_MAX_PDU_BYTES) must arrive whole within this",
    )
    listen_acse_timeout_s: float = Field(
        default=15.0, gt=0, description="A connection must request its association within this"
    )
    listen_idle_timeout_s: float = Field(
        default=60.0, gt=0, description="An association silent this long is aborted"
    )
    listen_max_pdu_bytes: int = Field(
        default=65536, ge=4096, le=16 * 1024 * 1024, description="Maximum PDU length we accept"
    )
    listen_tls_certificate: Path | None = Field(
        default=None, description="PEM certificate chain: the port speaks DICOM TLS"
    )
    listen_tls_key: Path | None = Field(default=None, description="PEM private key of it")
    listen_tls_ca: Path | None = Field(
        default=None, description="PEM CA of the peers' client certificates (then required)"
    )

    # -- review page (web/): accounts live in the database (``cxr-triage user``)
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8080, ge=1, le=65535)
    web_username: str = Field(
        default="reader", max_length=64, description="The account CXR_WEB_PASSWORD sets up"
    )
    web_password: SecretStr | None = Field(
        default=None,
        description=(
            "Deprecated (the one shared account): if set, `db upgrade` and `web` create the "
            "CXR_WEB_USERNAME account (role reviewer) or set its password (environment only)"
        ),
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
    web_remote_user_header: str = Field(
        default="",
        max_length=64,
        description=(
            "Header in which a trusted proxy (CXR_WEB_TRUSTED_PROXIES) names the logged-in "
            "person (its single sign-on); empty = off"
        ),
    )

    # -- PostgreSQL service logins (``cxr-triage db roles``; environment only)
    db_watcher_password: SecretStr | None = Field(default=None, description="login `watcher`")
    db_worker_password: SecretStr | None = Field(default=None, description="login `worker`")
    db_deliver_password: SecretStr | None = Field(default=None, description="login `deliver`")
    db_web_password: SecretStr | None = Field(default=None, description="login `web`")
    web_pacs_viewer_url: str = Field(
        default="",
        max_length=2000,
        description=(
            "'Open in PACS viewer' link on each case: an http(s) URL with {StudyInstanceUID} "
            "and/or {AccessionNumber} (percent-encoded); empty: no link"
        ),
    )

    # -- worker metrics (worker/prometheus.py): Prometheus text format on this port
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

    @model_validator(mode="before")
    @classmethod
    def _none_is_the_default(cls, data: Any) -> Any:
        """``inbox=None`` (or any folder or URL set to None in code) means its default."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and k in DERIVED_FIELDS)}
        return data

    @field_validator("data_dir", "inbox", "archive", "quarantine", "outbox", "overlays")
    @classmethod
    def _resolved(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("umask", mode="before")
    @classmethod
    def _octal(cls, value: object) -> object:
        """``CXR_UMASK=0027`` is octal, as umask(1) writes it."""
        if isinstance(value, str):
            if not re.fullmatch(r"0?[0-7]{3}", value):
                raise ValueError(f"umask {value!r} is not three octal digits, such as 0027")
            return int(value, 8)
        return value

    @field_validator("web_pacs_viewer_url")
    @classmethod
    def _usable_pacs_link(cls, value: str) -> str:
        from web.pacs_link import check_template  # raises ValueError naming the problem

        return check_template(value.strip())

    @field_validator(
        "listen_tls_certificate",
        "listen_tls_key",
        "listen_tls_ca",
        "fhir_ca_file",
        "ris_host",
        "fhir_base_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty variable (compose's ``${CXR_LISTEN_TLS_KEY:-}``) means "not set"."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        for name in ("archive", "quarantine"):
            target: Path = getattr(self, name)
            if target == self.inbox or target.is_relative_to(self.inbox):
                raise ValueError(f"{name} ({target}) must not lie inside the inbox")
        if self.listen_max_associations_per_peer > self.listen_max_associations:
            raise ValueError("listen_max_associations_per_peer exceeds listen_max_associations")
        if (self.listen_tls_certificate is None) != (self.listen_tls_key is None):
            raise ValueError("set both listen_tls_certificate and listen_tls_key, or neither")
        if self.listen_tls_ca is not None and self.listen_tls_certificate is None:
            raise ValueError("listen_tls_ca needs listen_tls_certificate and listen_tls_key")
        if self.visibility_timeout_s <= self.task_time_limit_s:
            raise ValueError("visibility_timeout_s must be longer than task_time_limit_s")
        return self

    @property
    def inbox_configured(self) -> bool:
        """True when CXR_INBOX (environment, settings file, or a command's INBOX argument)
        named the inbox; False for the default ``<data_dir>/inbox``."""
        return "inbox" in self.model_fields_set

    @property
    def file_mode(self) -> int:
        """The permissions of files the services create: 0666 less the umask."""
        return 0o666 & ~self.umask

    @property
    def embedded_broker(self) -> bool:
        """True for the no-server brokers (filesystem, SQLAlchemy) that one machine shares."""
        return self.broker_url.startswith(("filesystem://", "sqla+"))

    @property
    def broker_folder(self) -> Path:
        return self.data_dir / "broker"


#: The settings whose default is a place under ``data_dir`` (None given in code: that default).
DERIVED_FIELDS = frozenset(
    {"inbox", "archive", "quarantine", "outbox", "overlays", "database_url", "broker_url"}
)


def _under_data_dir(data: dict[str, Any], name: str) -> Path:
    """``name`` in the validated (resolved) ``data_dir``. Pydantic calls a field's default
    factory only once the fields before it validated, so ``data_dir`` is there."""
    data_dir: Path = data["data_dir"]
    return data_dir / name


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
