"""Results to a real PACS (Debian's Orthanc on free local ports): delivery throughput, and
triage throughput while the PACS is frozen.

    python bench/bench_results.py [--objects 200] [--files 40] [--model DIR]

1. delivery: ``--objects`` SR/SC objects (half as many sources, written by
   ``pacs.outbox.write_results``) tracked ``pending`` in a throwaway SQLite database, then
   the delivery loop (``pacs.delivery.Deliverer``, batches of 32, one association each) until
   all are stored in Orthanc. objects/s = objects / elapsed; also the mean SC file size.
2. triage with a frozen PACS: ``cxr-triage run`` (embedded SQLite + filesystem broker) with
   its delivery thread pointed at Orthanc, once with Orthanc up and once SIGSTOPped; ``--files``
   CR DICOMs dropped at once. files/s = files / (last finished_at - first received_at).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _films(count: int) -> list[Path]:
    """``count`` films, the committed sample's 24 over and over (each DICOM made from them
    gets fresh UIDs: distinct files, distinct rows)."""
    from tests.corpus import dataset_jpegs

    pool = dataset_jpegs(24)
    return [pool[index % len(pool)] for index in range(count)]


def delivery(objects: int, root: Path) -> tuple[float, float]:
    import numpy as np

    from db import migrate
    from db.engine import make_engine, make_session_factory
    from db.models import ResultState, utcnow
    from db.results import record_written, state_counts
    from db.worklist import Arrival, ScoreValues, admit
    from model.overlay import overlay_heatmap
    from pacs.delivery import Deliverer, DeliveryPolicy
    from pacs.outbox import write_results
    from pacs.store import PacsNode
    from tests.corpus import cr_dicom
    from tests.ingest.dicom_factory import jpeg_grey
    from tests.orthanc import Orthanc
    from tests.support.pacs import URGENT, synthetic_heatmap
    from tests.support.worklist import record_scored

    (root / "archive").mkdir(parents=True)
    url = f"sqlite:///{root / 'bench.sqlite3'}"
    migrate.upgrade(url)
    sessions = make_session_factory(make_engine(url))
    jpegs = _films(objects // 2)
    sc_sizes = []
    for index, jpeg in enumerate(jpegs):
        source = cr_dicom(jpeg, root / "archive" / f"{index}.dcm")
        grey = jpeg_grey(jpeg).astype(np.float32)
        overlay = overlay_heatmap(grey, synthetic_heatmap())
        written = write_results(source, URGENT, overlay, root / "outbox")
        sc_sizes.append(Path(written[1].path).stat().st_size)
        with sessions.begin() as session:
            entry, _ = admit(session, Arrival(f"{index:064d}", source.name, str(source), "dicom"))
            record_scored(session, entry, ScoreValues(0.9, "pneumonia", "urgent", 0, 0.4, "b"), "")
            record_written(session, entry.id, written, utcnow())
    orthanc = Orthanc(root / "orthanc", hardened=False)
    orthanc.start()
    try:
        node = PacsNode("127.0.0.1", orthanc.dicom_port, "ORTHANC", timeout_s=30)
        loop = Deliverer(sessions, node, DeliveryPolicy(batch_size=32))
        start = time.perf_counter()
        while loop.deliver_once().attempted:
            pass
        elapsed = time.perf_counter() - start
        with sessions() as session:
            stored = state_counts(session)[ResultState.STORED]
    finally:
        orthanc.stop()
    print(f"delivery: {stored} objects in {elapsed:.1f} s")
    return stored / elapsed, sum(sc_sizes) / len(sc_sizes)


def triage(files: int, root: Path, model: Path, frozen: bool) -> float:
    from tests.corpus import cr_dicom
    from tests.orthanc import Orthanc
    from tests.processes import all_final, rows, running
    from tests.support import wait_until

    orthanc = Orthanc(root / "orthanc", hardened=False)
    orthanc.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(
        CXR_MODEL_PATH=str(model),
        CXR_DATA_DIR=str(root / "data"),
        CXR_INBOX=str(root / "inbox"),
        CXR_QUIET_PERIOD_S="0.5",
        CXR_PACS_HOST="127.0.0.1",
        CXR_PACS_PORT=str(orthanc.dicom_port),
        CXR_PACS_AE_TITLE="ORTHANC",
        CXR_METRICS_PORT="",
    )
    env.pop("CXR_METRICS_PORT")
    url = f"sqlite:///{root / 'data' / 'worklist.sqlite3'}"
    staging = root / "staging"
    staging.mkdir(parents=True)
    sources = [cr_dicom(j, staging / f"{i}.dcm") for i, j in enumerate(_films(files))]
    log = root / "run.log"
    try:
        with running(["run"], env, log):
            wait_until(lambda: (root / "data" / "worklist.sqlite3").exists(), 120, "db", [log])
            time.sleep(20)  # the worker loads and traces the model
            if frozen:
                orthanc.freeze()
            (root / "inbox").mkdir(parents=True, exist_ok=True)
            for source in sources:
                shutil.move(str(source), root / "inbox" / source.name)
            wait_until(all_final(url, files), 900, "every row final", [log])
            found = rows(url)
    finally:
        orthanc.stop()
    first = min(r.received_at for r in found)
    last = max(r.finished_at for r in found if r.finished_at)
    return files / (last - first).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    from bench.bench_pipeline import model_directory

    with tempfile.TemporaryDirectory(prefix="cxr-bench-results-") as scratch:
        root = Path(scratch)
        per_s, sc_bytes = delivery(args.objects, root / "delivery")
        model = model_directory(args.model, root)
        up = triage(args.files, root / "up", model, frozen=False)
        frozen = triage(args.files, root / "frozen", model, frozen=True)
    print(
        f"results: {per_s:.1f} objects/s delivered to Orthanc (one association per 32); "
        f"mean SC {sc_bytes / 1e6:.2f} MB; triage {up:.2f} files/s with the PACS up, "
        f"{frozen:.2f} files/s with it frozen (SIGSTOP)"
    )


if __name__ == "__main__":
    main()
