"""The result queue against a PACS that misbehaves, in real time (README, Reliability 26-30).

    python bench/bench_delivery_outages.py [--rows 5]

Each scenario writes ``--rows`` scored rows' SR and SC (real files, a throwaway SQLite
database), runs the delivery loop (``pacs.delivery.Deliverer.run``, default policy) in a
thread against a pynetdicom Storage SCP on a free port, and prints what happened:

1. out of resources: the SCP answers 0xA700 for 90 s, then Success (the review's finding:
   the objects were ``failed`` after 5 attempts in 31 s);
2. one unreadable file: one SC truncated to half in a batch of all the others;
3. the PACS does not know the called AE title;
4. the PACS refuses JPEG: the SC goes uncompressed (bytes on the wire against the file).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: How long the PACS answers 0xA700 in scenario 1: long enough for the old loop's five
#: refusals (2 + 4 + 8 + 16 s of backoff), short of any real outage.
SPELL_S = 90.0


def setup(root: Path, rows: int):  # type: ignore[no-untyped-def]
    import numpy as np

    from db import migrate
    from db.engine import make_engine, make_session_factory
    from model.overlay import overlay_heatmap
    from tests.corpus import dataset_jpegs
    from tests.ingest.dicom_factory import jpeg_grey
    from tests.pacs.delivery_rows import add_rows
    from tests.support.pacs import synthetic_heatmap

    url = f"sqlite:///{root / 'bench.sqlite3'}"
    migrate.upgrade(url)
    sessions = make_session_factory(make_engine(url))
    grey = jpeg_grey(dataset_jpegs(2)[1])
    overlay = overlay_heatmap(grey.astype(np.float32), synthetic_heatmap())
    add_rows(sessions, root, grey, overlay, rows)
    return sessions


def objects(sessions):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from db.models import ResultObject

    with sessions() as session:
        return list(session.scalars(select(ResultObject)))


def run_until(loop, sessions, done, limit_s: float) -> float:  # type: ignore[no-untyped-def]
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    start = time.monotonic()
    thread.start()
    try:
        while time.monotonic() - start < limit_s and not done(objects(sessions)):
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    return time.monotonic() - start


def out_of_resources(root: Path, rows: int) -> None:
    from db.models import ResultState
    from pacs.delivery import Deliverer
    from tests.pacs.scp import storage_scp

    sessions = setup(root, rows)
    with storage_scp() as scp:
        scp.status = 0xA700
        threading.Timer(SPELL_S, lambda: setattr(scp, "status", 0x0000)).start()
        loop = Deliverer(sessions, scp.node(timeout_s=30.0))
        elapsed = run_until(
            loop,
            sessions,
            lambda found: all(o.state is not ResultState.PENDING for o in found),
            600,
        )
    found = objects(sessions)
    states = {o.state.value for o in found}
    print(
        f"1. 0xA700 for {SPELL_S:g} s: {len(found)} objects {states} after {elapsed:.1f} s; "
        f"attempts {min(o.attempts for o in found)}-{max(o.attempts for o in found)}; "
        f"{sum(o.state is ResultState.FAILED for o in found)} failed"
    )


def unreadable(root: Path, rows: int) -> None:
    from db.models import ResultState
    from pacs.delivery import Deliverer
    from tests.pacs.scp import storage_scp

    sessions = setup(root, rows)
    victim = next(o for o in objects(sessions) if Path(o.path or "").name.startswith("SC_"))
    data = Path(victim.path or "").read_bytes()
    Path(victim.path or "").write_bytes(data[: len(data) // 2])
    with storage_scp() as scp:
        loop = Deliverer(sessions, scp.node(timeout_s=30.0))
        elapsed = run_until(
            loop,
            sessions,
            lambda found: all(o.state is not ResultState.PENDING for o in found),
            120,
        )
        associations = scp.associations
    found = objects(sessions)
    bad = next(o for o in found if o.id == victim.id)
    stored = sum(o.state is ResultState.STORED for o in found)
    print(
        f"2. one truncated SC among {len(found)}: {stored} stored, the truncated one "
        f"{bad.state.value} ({bad.reason}, {bad.attempts} attempt) in {elapsed:.1f} s over "
        f"{associations} association(s): {bad.last_error}"
    )


def wrong_called_ae(root: Path, rows: int) -> None:
    from db.models import ResultState
    from pacs.delivery import Deliverer
    from tests.pacs.scp import storage_scp

    sessions = setup(root, rows)
    with storage_scp() as scp:
        loop = Deliverer(sessions, scp.node(called_ae_title="PACS", timeout_s=30.0))
        elapsed = run_until(
            loop, sessions, lambda found: all(o.state is ResultState.FAILED for o in found), 120
        )
    found = objects(sessions)
    print(
        f"3. called AE title unknown: {len(found)} objects "
        f"{ {o.reason for o in found} } after {elapsed:.2f} s: {found[0].last_error}"
    )


def jpeg_refused(root: Path, rows: int) -> None:
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    from db.models import ResultState
    from pacs.delivery import Deliverer
    from tests.pacs.scp import storage_scp

    sessions = setup(root, rows)
    sc_files = [Path(o.path or "") for o in objects(sessions) if "SC_" in (o.path or "")]
    with storage_scp(syntaxes=[ExplicitVRLittleEndian]) as scp:
        loop = Deliverer(sessions, scp.node(timeout_s=30.0))
        elapsed = run_until(
            loop, sessions, lambda found: all(o.state is ResultState.STORED for o in found), 120
        )
        sent = [ds for ds in scp.received if ds.SOPClassUID == SecondaryCaptureImageStorage]
    mean_file = sum(p.stat().st_size for p in sc_files) / len(sc_files)
    mean_sent = sum(len(ds.PixelData) for ds in sent) / len(sent)
    print(
        f"4. JPEG refused: {len(sent)} SC stored uncompressed in {elapsed:.1f} s; mean SC file "
        f"{mean_file / 1e6:.2f} MB (JPEG), {mean_sent / 1e6:.2f} MB of pixels sent"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5)
    args = parser.parse_args()
    for scenario in (out_of_resources, unreadable, wrong_called_ae, jpeg_refused):
        with tempfile.TemporaryDirectory() as folder:
            scenario(Path(folder), args.rows)


if __name__ == "__main__":
    main()
