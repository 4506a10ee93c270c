"""Login sessions the server can end: the signed cookie carries only a random session id.

Starlette's ``SessionMiddleware`` keeps the session in a signed cookie and nothing on the
server, so "logout" only asked the browser to forget it: a copied cookie kept reading the
worklist and posting reviews until it expired (8 h). Here the cookie holds a session id
that must also be live in :class:`SessionStore`; logout, expiry, or a restart of the web
process removes it, and the cookie is then worth nothing.

A session names an account id and the account's password stamp at login (when its
password was last set): the account is read again at every request
(:func:`web.auth.session_person`), so that a disabled account, a changed role or a new
password takes effect on the next click, whichever process made the change.

In memory, because ``cxr-triage web`` is one process; a restart logs every reader out,
which is the safe direction.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Live sessions at most; the oldest are dropped first (a login flood cannot grow memory).
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class LiveSession:
    account_id: int
    stamp: str  # the account's password_changed_at at login ("" if none)
    expires_at: float


class SessionStore:
    """Session id -> the account it belongs to, until it expires or is revoked."""

    def __init__(self, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._sessions: dict[str, LiveSession] = {}
        self._lock = threading.Lock()

    def start(self, account_id: int, stamp: str) -> str:
        """A new session id for the account (unguessable, 256 bits)."""
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._expire(now)
            while len(self._sessions) >= MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[session_id] = LiveSession(account_id, stamp, now + self.max_age_s)
        return session_id

    def get(self, session_id: str) -> LiveSession | None:
        """The live session, else ``None``."""
        with self._lock:
            live = self._sessions.get(session_id)
            if live is None:
                return None
            if live.expires_at <= self._clock():
                del self._sessions[session_id]
                return None
            return live

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _expire(self, now: float) -> None:
        for session_id in [s for s, live in self._sessions.items() if live.expires_at <= now]:
            del self._sessions[session_id]
