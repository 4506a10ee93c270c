"""Login cost on the review page: the argon2id check, a whole form login, a locked refusal.

- one argon2id hash and one verification with the shipped parameters (db/passwords.py);
- a form login through the real app on a SQLite worklist: accepted (check, lock reset, audit
  row, session), refused (check, lock count, audit row), refused unchecked while locked;
- the peak resident size of this process over 4 parallel logins (the checks are capped at
  ``MAX_CONCURRENT`` at once, each holding 19 MiB). Usage:

    PYTHONPATH=. python bench/bench_login.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import logging
import resource
import secrets
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi.testclient import TestClient

from db import accounts, migrate
from db.engine import make_engine, make_session_factory
from db.models import Role
from db.passwords import MEMORY_COST_KIB, PARALLELISM, TIME_COST, hash_password, verify_password
from web.app import create_app
from web.config import WebConfig

PASSWORD = secrets.token_urlsafe(18)  # a throwaway account's, made up at each run


def median_ms(action, rounds: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    print(f"argon2id t={TIME_COST} m={MEMORY_COST_KIB // 1024} MiB p={PARALLELISM}")
    stored = hash_password(PASSWORD)
    print(f"hash:   {median_ms(lambda: hash_password(PASSWORD), rounds):6.1f} ms (median)")
    print(f"verify: {median_ms(lambda: verify_password(stored, PASSWORD), rounds):6.1f} ms")

    folder = Path(tempfile.mkdtemp())
    url = f"sqlite:///{folder / 'worklist.sqlite3'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        for n in range(4):
            accounts.add(session, f"reader{n}", Role.REVIEWER, PASSWORD, actor="bench")
    engine.dispose()
    app = create_app(WebConfig(url, folder / "archive", folder / "overlays"))
    logging.getLogger("web").setLevel(logging.ERROR)

    def login(address: str, name: str, password: str) -> int:
        with TestClient(app, client=(address, 40000)) as client:
            form = {"username": name, "password": password}
            return client.post("/login", data=form, follow_redirects=False).status_code

    accepted = median_ms(lambda: login("192.0.2.1", "reader0", PASSWORD), rounds)
    print(f"form login accepted:            {accepted:6.1f} ms (median of {rounds})")
    wrong = median_ms(lambda: login("192.0.2.2", "reader1", "wrong password"), 4)
    print(f"form login refused (checked):   {wrong:6.1f} ms (median of 4)")
    locked = median_ms(lambda: login("192.0.2.3", "reader1", "wrong password"), rounds)
    print(f"form login refused (locked):    {locked:6.1f} ms (median of {rounds})")
    unknown = median_ms(lambda: login("192.0.2.4", "nobody", "wrong password"), 4)
    print(f"unknown name refused (checked): {unknown:6.1f} ms (median of 4)")
    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with ThreadPoolExecutor(8) as pool:
        started = time.perf_counter()
        codes = list(
            pool.map(
                lambda n: login(f"198.51.100.{n}", f"reader{2 + n % 2}", PASSWORD),
                range(8 * rounds),
            )
        )
        took = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    growth = (peak_kib - base_kib) / 1024
    print(
        f"{codes.count(303)} accepted logins from 8 threads: {took:.1f} s "
        f"({took / len(codes) * 1000:.0f} ms each); peak RSS +{growth:.0f} MiB"
    )


if __name__ == "__main__":
    main()
