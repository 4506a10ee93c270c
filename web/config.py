"""What the review page needs to run, handed in by the caller (``cxr-triage web`` builds it
from the worker's settings; ``web`` sits below ``worker`` and does not import it)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

MIN_PASSWORD_LENGTH = 8


class WebConfigError(ValueError):
    """The page must not start like this (no password, a weak one, an unusable folder)."""


@dataclass(frozen=True)
class WebConfig:
    database_url: str
    archive_dir: Path  # thumbnails of rows without an overlay are rendered from here only
    overlay_dir: Path  # heatmap overlay PNGs stored by the worker, named by file SHA-256
    username: str
    password: str = field(repr=False)
    session_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    session_max_age_s: int = 8 * 3600  # one reading shift
    secure_cookies: bool = False  # True behind TLS: the login cookie is then HTTPS-only
    page_size: int = 100
    # Failed-login throttle (web/throttle.py): free failures per client and per user name,
    # then a lock doubling from base to max.
    login_free_failures: int = 5
    login_backoff_base_s: float = 1.0
    login_backoff_max_s: float = 900.0
    model_dir: Path | None = None  # the drift watch's reference; None: the shipped model

    def __post_init__(self) -> None:
        if not self.password:
            raise WebConfigError(
                "no password for the review page: set CXR_WEB_PASSWORD in the environment"
            )
        if len(self.password) < MIN_PASSWORD_LENGTH:
            raise WebConfigError(
                f"CXR_WEB_PASSWORD must be at least {MIN_PASSWORD_LENGTH} characters"
            )
        if not self.username or ":" in self.username:
            raise WebConfigError("CXR_WEB_USERNAME must be a non-empty name without ':'")
        if len(self.session_secret) < 16:
            raise WebConfigError("CXR_WEB_SESSION_SECRET must be at least 16 characters")
