"""Failed-login throttling: a backoff per client address and per user name.

Without it a password can be guessed as fast as the server answers (200 guesses in 4 s were
measured). Each key (``client:<address>``, ``user:<digest>``) may fail
``free_failures`` times; that failure and every further one lock the key for a backoff that
doubles from ``base_s`` up to ``max_s``. While a key is locked every attempt is refused
before the password is even compared, and counts as a failure (it extends the lock): the
right password, guessed or typed, is refused too, so hammering learns nothing, and 200
guesses end in a lock of ``max_s`` however fast they came. A success clears the user's key
(the client's stays, so a valid account cannot be used to reset an address's count).

The per-user key holds across addresses (a botnet still meets it); the cost is that someone
who knows the user name can keep the reader locked out for ``max_s`` at a time, which is the
usual trade (OWASP's authentication cheat sheet) and why ``max_s`` stays at minutes.

State is in memory: ``cxr-triage web`` is one process, and a restart forgetting the counts
only ever helps a reader who locked themselves out.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: Keys remembered at most (an attacker rotating user names must not grow memory unbounded).
MAX_KEYS = 10_000


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


def user_digest(username: str) -> str:
    """What logs and keys call a submitted user name: 12 hex digits of its SHA-256.

    Enough to see that the same name is being tried; the name itself (sometimes a password
    typed into the wrong field) never reaches a log.
    """
    return hashlib.sha256(username.encode("utf-8", "replace")).hexdigest()[:12]


class LoginThrottle:
    """Counts failures per key and says how long a key must still wait."""

    def __init__(
        self,
        free_failures: int = 5,
        base_s: float = 1.0,
        max_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if free_failures < 1 or base_s <= 0 or max_s < base_s:
            raise ValueError("need free_failures >= 1 and 0 < base_s <= max_s")
        self.free_failures = free_failures
        self.base_s = base_s
        self.max_s = max_s
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, *keys: str) -> float:
        """Seconds until every key may try again; 0 when none is locked."""
        now = self._clock()
        with self._lock:
            waits = [r.locked_until - now for k in keys if (r := self._records.get(k))]
        return max([0.0, *waits])

    def failed(self, *keys: str) -> int:
        """Count a failure on each key; returns the highest failure count among them."""
        now = self._clock()
        worst = 0
        with self._lock:
            for key in keys:
                record = self._records.pop(key, None) or _Record()
                if now - record.last_failure > self.max_s:
                    record = _Record()  # quiet for a whole lock period: start afresh
                record.failures += 1
                record.last_failure = now
                excess = record.failures - self.free_failures
                if excess >= 0:
                    backoff = self.base_s * math.pow(2, min(excess, 30))
                    record.locked_until = now + min(backoff, self.max_s)
                self._records[key] = record
                worst = max(worst, record.failures)
            while len(self._records) > MAX_KEYS:
                self._records.popitem(last=False)
        return worst

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._records.pop(key, None)
