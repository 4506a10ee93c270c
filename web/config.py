"""What the review page needs to run, handed in by the caller (``cxr-triage web`` builds it
from the worker's settings; ``web`` sits below ``worker`` and does not import it).

Who may log in is not configuration: accounts live in the database (``cxr-triage user``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from db.accounts import LockPolicy
from web.pacs_link import PacsLinkError, check_template


class WebConfigError(ValueError):
    """The page must not start like this (no account, a trusted header without a proxy...)."""


@dataclass(frozen=True)
class WebConfig:
    database_url: str
    archive_dir: Path  # thumbnails of rows without an overlay are rendered from here only
    overlay_dir: Path  # heatmap overlay PNGs stored by the worker, named by file SHA-256
    session_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    session_max_age_s: int = 8 * 3600  # one reading shift
    secure_cookies: bool = False  # True behind TLS: the login cookie is then HTTPS-only
    page_size: int = 100
    # Failed-login throttle: free failures per account, per unknown name and per client,
    # then a lock doubling from base to max (db.accounts.LockPolicy).
    login_free_failures: int = 5
    login_backoff_base_s: float = 1.0
    login_backoff_max_s: float = 900.0
    model_dir: Path | None = None  # the drift watch's reference; None: the shipped model
    # Addresses (or networks) of the reverse proxy: its X-Forwarded-For names the client,
    # and only from it is the remote-user header believed. Comma-separated; "" = none.
    trusted_proxies: str = ""
    # The header in which the trusted proxy names the logged-in person (its single sign-on):
    # "" = off. The name must be an enabled account; the account's role applies.
    remote_user_header: str = ""

    #: "Open in PACS viewer": a URL with {StudyInstanceUID} / {AccessionNumber} (web/pacs_link.py)
    pacs_viewer_url: str = ""

    def __post_init__(self) -> None:
        try:
            check_template(self.pacs_viewer_url)
        except PacsLinkError as error:
            raise WebConfigError(str(error)) from error
        if len(self.session_secret) < 16:
            raise WebConfigError("CXR_WEB_SESSION_SECRET must be at least 16 characters")
        if self.remote_user_header:
            proxies = {p.strip() for p in self.trusted_proxies.split(",") if p.strip()}
            if not proxies or "*" in proxies:
                raise WebConfigError(
                    "CXR_WEB_REMOTE_USER_HEADER needs CXR_WEB_TRUSTED_PROXIES naming the proxy "
                    "(not '*'): anyone else could send the header"
                )

    @property
    def lock_policy(self) -> LockPolicy:
        return LockPolicy(
            self.login_free_failures, self.login_backoff_base_s, self.login_backoff_max_s
        )
