"""The RIS down for a while (two minutes by default): every ORU^R01 arrives once, urgent first.

A real MLLP listener process (``tests.ris.listener``, built from the ``hl7`` library) is down
while exams are scored and their messages written (mixed tiers, spread over the outage); the
RIS delivery loop runs as in production (``CXR_RIS_RECONNECT_MAX_S`` 10 s, the SR/SC's
backoff and schedule) on SQLite. When the listener comes back, the figures: how many
messages it got, how many twice, whether the order was urgent-suspect-routine, the seconds
from the listener's return to the first and the last ACK, and the attempts made meanwhile.

    python bench/bench_ris.py [--outage-s 120] [--messages 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db import migrate
from db.engine import make_engine, make_session_factory
from db.models import ResultKind, ResultObject, ResultState
from pacs.delivery import Deliverer, DeliveryPolicy
from ris.mllp import MllpNode
from tests.ris.support import ROUTINE, SUSPECT, URGENT, add_exams, listener
from tests.support import free_port

TIERS = {"103391001": "urgent", "SUSPECT": "suspect", "50811001": "routine"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outage-s", type=float, default=120.0)
    parser.add_argument("--messages", type=int, default=60)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ris-"))
    url = f"sqlite:///{work / 'w.sqlite3'}"
    migrate.upgrade(url)
    sessions = make_session_factory(make_engine(url))
    port = free_port()
    node = MllpNode("127.0.0.1", port)
    policy = DeliveryPolicy(drain_in_order=True, reconnect_max_s=10.0)  # production defaults
    loop = Deliverer(sessions, node, policy, kinds=(ResultKind.HL7,))
    stop = threading.Event()
    threading.Thread(target=loop.run, args=(stop,), daemon=True).start()
    mix = [ROUTINE, SUSPECT, URGENT]
    started = time.monotonic()
    for index in range(args.messages):  # written over the first 3/4 of the outage
        add_exams(sessions, work, [mix[index % 3]], start=index)
        time.sleep(args.outage_s * 0.75 / args.messages)
    time.sleep(max(0.0, args.outage_s - (time.monotonic() - started)))
    with sessions() as session:
        attempts = sum(o.attempts for o in session.query(ResultObject))
    with listener(port, work / "got.jsonl") as ris:
        back = time.time()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with sessions() as session:
                states = [o.state for o in session.query(ResultObject)]
            if all(s is ResultState.STORED for s in states):
                break
            time.sleep(0.1)
        got = ris.messages()
    stop.set()
    counts = Counter(m["control_id"] for m in got)
    order = [TIERS[m["tier"]] for m in got]
    expected = sorted(order, key=["urgent", "suspect", "routine"].index)
    print(f"outage {args.outage_s:.0f} s, {args.messages} messages written during it")
    print(f"delivery attempts during the outage: {attempts}")
    duplicates = len(got) - len(counts)
    print(f"received {len(got)} messages, {len(counts)} distinct, duplicates {duplicates}")
    print(f"all delivered: {all(s is ResultState.STORED for s in states)}")
    print(f"order urgent -> suspect -> routine: {order == expected}")
    if got:
        print(f"first ACK {got[0]['received'] - back:.2f} s after the listener came back")
        print(f"last ACK {got[-1]['received'] - back:.2f} s after the listener came back")
    print(f"connections used: {len({m['connection'] for m in got})}")


if __name__ == "__main__":
    main()
