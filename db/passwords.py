"""Password hashing for review-page accounts: argon2id (RFC 9106), through argon2-cffi.

Why argon2id: it is memory-hard (a guess costs memory as well as time, which is what makes
GPUs and ASICs expensive for an attacker who stole the table) and it is the first choice of
OWASP's Password Storage Cheat Sheet; argon2-cffi is the binding its authors' reference
implementation is published through. The parameters are OWASP's first configuration,
m = 19 MiB, t = 2, p = 1 (about 35 ms on the 2-core test machine): a web process that
checks passwords on a small server must answer in well under a second while several
readers log in at once. They are stored in every hash (PHC string format), so raising them
later only needs ``cxr-triage user set-password``; :func:`needs_rehash` says which hashes
are older.

Every hash and check runs on one small pool of :data:`MAX_CONCURRENT` threads, whatever
thread asked: a login flood then costs at most that many times 19 MiB. With a semaphore
alone, each of the web server's 40 worker threads kept its own 19 MiB in its malloc arena
after its first check (glibc raises its mmap threshold past 19 MiB once one such block is
freed): 8 threads held 134 MiB, measured by ``bench/bench_login.py``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TIME_COST = 2
MEMORY_COST_KIB = 19 * 1024
PARALLELISM = 1
#: Password checks at once in one process (each holds MEMORY_COST_KIB while it runs).
MAX_CONCURRENT = 4
#: Longer input is refused unchecked (an argon2 input is unbounded; a form field is not).
MAX_PASSWORD_CHARS = 1024

_HASHER = PasswordHasher(
    time_cost=TIME_COST,
    memory_cost=MEMORY_COST_KIB,
    parallelism=PARALLELISM,
    hash_len=32,
    salt_len=16,
    type=Type.ID,
)
_POOL = ThreadPoolExecutor(MAX_CONCURRENT, thread_name_prefix="argon2")


def hash_password(password: str) -> str:
    """The argon2id PHC string of ``password`` (a fresh random salt each time)."""
    return _POOL.submit(_HASHER.hash, password).result()


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored``. ``stored`` None (no password, or no such
    account) is checked against a dummy hash, so that the answer takes as long either way
    and the response time does not tell which user names exist."""
    if len(password) > MAX_PASSWORD_CHARS or not _encodable(password):
        return False
    against = stored or _dummy_hash()
    return _POOL.submit(_verify, against, password).result() and stored is not None


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True when ``stored`` was made with other parameters than today's."""
    try:
        return _HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def _encodable(text: str) -> bool:
    """False for text with lone surrogates (argon2 hashes UTF-8 bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@cache
def _dummy_hash() -> str:
    return hash_password("no account has this password")
