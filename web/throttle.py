"""Failed-login throttling for what has no account row: client addresses and unknown names.

Without a throttle a password can be guessed as fast as the server answers (200 guesses in
4 s were measured, issue 12). Accounts keep their own lock in the database
(:func:`db.accounts.record_failure`), which no other key can push out. What remains in
memory, under the same rule (:class:`db.accounts.LockPolicy`), is:

- one key per client address (``client:<address>``), so that one address cannot try name
  after name; a success does not clear it (a valid account must not reset an address's
  count);
- one key per *unknown* name, so that an unknown name locks exactly like a known one and
  the answers do not tell which accounts exist. The key is an HMAC of the name under a
  random per-process key: never logged, never stored, and useless to anyone reading memory
  dumps with a word list.

Each table is bounded (:data:`MAX_KEYS`, oldest dropped first), and the two are separate:
junk names from one address fill only the unknown-name table, never the client table, and
never reach an account's lock. A restart forgetting the counts only helps a reader who
locked themselves out; accounts stay locked across it.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from db.accounts import LockPolicy

#: Keys remembered at most per table (an attacker rotating names must not grow memory).
MAX_KEYS = 10_000


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class LoginThrottle:
    """Counts failures per key and says how long a key must still wait."""

    def __init__(
        self,
        policy: LockPolicy,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._max_keys = max_keys
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
                if now - record.last_failure > self.policy.max_s:
                    record = _Record()  # quiet for a whole lock period: start afresh
                record.failures += 1
                record.last_failure = now
                wait = self.policy.lock_s(record.failures)
                if wait > 0:
                    record.locked_until = now + wait
                self._records[key] = record
                worst = max(worst, record.failures)
            while len(self._records) > self._max_keys:
                self._records.popitem(last=False)
        return worst

    def __len__(self) -> int:
        return len(self._records)


class UnknownNames:
    """The in-memory keys of names that match no account (see the module docstring)."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def key(self, typed: str) -> str:
        digest = hmac.new(self._key, typed.strip().lower().encode("utf-8", "replace"), "sha256")
        return f"unknown:{digest.hexdigest()}"


def client_key(address: str) -> str:
    return f"client:{address}"
