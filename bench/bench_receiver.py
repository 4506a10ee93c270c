"""The DICOM receiver (``cxr-triage listen``, ``run --listen``) under load, on real processes.

    python bench/bench_receiver.py memory  [--objects 10] [--size-mib 1024]
    python bench/bench_receiver.py echo    [--slow 10] [--echoes 20]
    python bench/bench_receiver.py latency [--files 5] [--model DIR]
    python bench/bench_receiver.py hostile


1. memory: a ``listen`` process (idle resident size measured after a C-ECHO); ``--objects``
   C-STOREs of ``--size-mib`` each sent at once by dcmtk's ``storescu`` (one process each,
   the objects sparse files so the senders read holes); the receiver's peak resident size
   (``VmHWM``) above idle, the wall time, the aggregate MB/s, every status. Target: under
   300 MiB above idle for ten 1 GiB objects.
2. echo: ``--slow`` associations from another address, each dripping one byte a second into
   a P-DATA PDU; then ``--echoes`` C-ECHOs from a modality's address, one after the other:
   the slowest and the median answer, and how long the drippers lasted. Twice: with the
   default per-peer limit (4), and with it raised to let all of them in (the review's ten
   established slow associations). Target: every C-ECHO answered within 2 s.
3. latency: ``cxr-triage run INBOX --listen`` with its delivery thread pointed at a local
   Orthanc; ``--files`` CR radiographs sent one at a time by ``storescu``, each after the
   previous one's SR is stored: seconds from the C-STORE's Success to the row ``done`` and
   to its SR and SC ``stored`` in Orthanc (polled every 50 ms). Then the same files copied
   onto the inbox as a share sender would, for the quiet period's share. Target: well under
   2 s on an idle machine.
4. hostile: one object of each kind the red team sent (deflate bombs, a header over the
   pixel limit, a JPEG frame header over it), each to a fresh ``listen`` process: the
   status, the receiver's peak resident size above idle, the seconds; then 400 bare TCP
   connections from one address and a C-ECHO and C-STORE from another.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STORESCU = shutil.which("storescu", path="/usr/bin:/usr/local/bin") or "/usr/bin/storescu"
MIB = 1024 * 1024


def memory(objects: int, size_mib: int, root: Path) -> None:
    from tests.pacs.hostile import (
        listen_process,
        peak_rss_kib,
        radiograph_header,
        write_sparse_radiograph,
    )
    from tests.support import rss_kib

    sources = []
    for index in range(objects):
        header = radiograph_header(10_000, 10_000)  # 100 MP: the most ingest accepts
        path = root / f"object{index}.dcm"
        sources.append(write_sparse_radiograph(path, header, size_mib * MIB))
    limit = str((size_mib + 64) * MIB)
    with listen_process(
        root / "node",
        CXR_LISTEN_MAX_OBJECT_BYTES=limit,
        CXR_LISTEN_MAX_ASSOCIATIONS=str(max(16, objects)),
        CXR_LISTEN_MAX_ASSOCIATIONS_PER_PEER=str(max(4, objects)),
    ) as node:
        idle = rss_kib(node.pid)
        started = time.perf_counter()
        senders = [
            subprocess.Popen(
                [
                    STORESCU,
                    "-aec",
                    "CXR_TRIAGE",
                    "-aet",
                    "MODALITY",
                    "127.0.0.1",
                    str(node.port),
                    str(path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for path in sources
        ]
        codes = [sender.wait() for sender in senders]
        elapsed = time.perf_counter() - started
        peak = peak_rss_kib(node.pid)
        received = [p for p in node.inbox.glob("*.dcm")]
    total_mb = objects * size_mib * MIB / 1e6
    print(
        f"memory: {objects} x {size_mib} MiB C-STOREs at once (dcmtk storescu): receiver idle "
        f"{idle / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, +{(peak - idle) / 1024:.0f} MiB "
        f"above idle; {elapsed:.1f} s ({total_mb / elapsed:.0f} MB/s); storescu exit codes "
        f"{sorted(set(codes))}; {len(received)} objects in the inbox"
    )


def echo_under_drip(slow: int, echoes: int, root: Path) -> None:
    from tests.pacs.hostile import Dripper, echo, listen_process

    for per_peer in (4, slow):
        with listen_process(
            root / f"node-{per_peer}",
            CXR_LISTEN_PEERS="*@127.0.0.0/8",
            CXR_LISTEN_MAX_ASSOCIATIONS_PER_PEER=str(per_peer),
            CXR_LISTEN_MAX_ASSOCIATIONS=str(max(16, slow + 4)),
        ) as node:
            drippers = [
                Dripper(node.port, "CXR_TRIAGE", bind="127.0.0.2", interval_s=1.0).start()
                for _ in range(slow)
            ]
            held = sum(d.established for d in drippers)
            times = []
            answered = 0
            for _ in range(echoes):
                ok, seconds = echo(node.port, called="CXR_TRIAGE")
                answered += ok
                times.append(seconds)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(
                d.established and d.cut_off_after is None for d in drippers
            ):
                time.sleep(0.5)
            lasted = [d.cut_off_after for d in drippers if d.cut_off_after is not None]
            for dripper in drippers:
                dripper.stop()
        print(
            f"echo: {slow} slow associations (1 byte/s into a PDU) from 127.0.0.2, per-peer "
            f"limit {per_peer}: {held} got in; {answered}/{echoes} C-ECHOs from 127.0.0.1 "
            f"answered, median {statistics.median(times) * 1000:.0f} ms, slowest "
            f"{max(times) * 1000:.0f} ms; the slow ones cut off after "
            f"{max(lasted) if lasted else float('nan'):.1f} s (CXR_LISTEN_PDU_TIMEOUT_S 30)"
        )


def latency(files: int, model: Path | None, root: Path) -> None:
    from tests.corpus import cr_dicom, dataset_jpegs
    from tests.orthanc import Orthanc
    from tests.pacs.hostile import echo
    from tests.processes import running
    from tests.support import free_port, wait_until

    port = free_port()
    orthanc = Orthanc(root / "orthanc", hardened=False)
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(
        CXR_DATA_DIR=str(root / "data"),
        CXR_LISTEN_HOST="127.0.0.1",
        CXR_PACS_HOST="127.0.0.1",
        CXR_PACS_PORT=str(orthanc.dicom_port),
        CXR_PACS_AE_TITLE="ORTHANC",
        PYTHONUNBUFFERED="1",
    )
    if model is not None:
        env["CXR_MODEL_PATH"] = str(model)
    progress = _Progress(f"sqlite:///{root / 'data' / 'worklist.sqlite3'}")
    sources = [cr_dicom(j, root / f"cr{i}.dcm") for i, j in enumerate(dataset_jpegs(2 * files))]
    log = root / "run.log"

    def store(path: Path) -> None:
        command = [STORESCU, "-aec", "CXR_TRIAGE", "-aet", "CR_ROOM1", "127.0.0.1", str(port)]
        subprocess.run([*command, str(path)], check=True, capture_output=True)

    def copy(path: Path) -> None:
        shutil.copy(path, inbox / path.name)

    orthanc.start()
    try:
        argv = ["run", str(inbox), "--listen", "--listen-port", str(port), "--verbose"]
        with running(argv, env, log):
            wait_until(lambda: echo(port, called="CXR_TRIAGE")[0], 600, "the node", [log])
            progress.measure(store, sources[0])  # warms the model's graphs: not counted
            by_receiver = [progress.measure(store, path) for path in sources[1:files]]
            by_share = [progress.measure(copy, path) for path in sources[files : 2 * files - 1]]
    finally:
        orthanc.stop()
    for name, measured in (("C-STORE into run --listen", by_receiver), ("copy", by_share)):
        done = [m[0] for m in measured]
        stored = [m[1] for m in measured]
        print(
            f"latency: {name}, {len(measured)} files one at a time: to row done median "
            f"{statistics.median(done):.2f} s (max {max(done):.2f}), to SR+SC stored in Orthanc "
            f"median {statistics.median(stored):.2f} s (max {max(stored):.2f})"
        )


class _Progress:
    """Counts rows done and result objects stored in the run's worklist database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0

    def measure(self, send: Callable[[Path], None], path: Path) -> tuple[float, float]:
        """Send one file; seconds from the send's end (Success) to its row done and to both
        of its result objects stored."""
        from db.models import ResultState, Status
        from tests.e2e.test_orthanc import objects
        from tests.processes import rows

        send(path)
        self.sent += 1
        sent = time.monotonic()
        done_at = None
        while time.monotonic() < sent + 300:
            if (
                done_at is None
                and sum(r.status is Status.DONE for r in rows(self.url)) >= self.sent
            ):
                done_at = time.monotonic()
            if done_at is not None:
                states = [o.state for o in objects(self.url)]
                if states.count(ResultState.STORED) >= 2 * self.sent:
                    return done_at - sent, time.monotonic() - sent
            time.sleep(0.05)
        raise RuntimeError(f"{path.name} was not scored and delivered within 300 s")


def hostile(root: Path) -> None:
    from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    from tests.pacs.hostile import (
        bare_connections,
        echo,
        listen_process,
        peak_rss_kib,
        radiograph_header,
        send_file,
        write_deflate_bomb,
        write_sparse_radiograph,
    )
    from tests.reliability.bombs import deflate_bomb, jpeg_sof_bomb
    from tests.support import rss_kib

    cases: list[tuple[str, Path, UID]] = [
        (
            "deflate bomb, 11000 x 11000 zeros (242 MB inflated)",
            write_deflate_bomb(root / "pixels.dcm", 11_000, 11_000),
            DeflatedExplicitVRLittleEndian,
        ),
        (
            "deflate bomb, a 250 MiB private element before a 64 x 64 image",
            deflate_bomb(root / "private.dcm", 250 * MIB),
            DeflatedExplicitVRLittleEndian,
        ),
        (
            "header of 20000 x 20000, 1 kB of Pixel Data",
            write_sparse_radiograph(root / "rows.dcm", radiograph_header(20_000, 20_000), 1024),
            ExplicitVRLittleEndian,
        ),
        (
            "JPEG whose SOF says 65000 x 65000 under a 64 x 64 header",
            jpeg_sof_bomb(root / "sof.dcm"),
            UID("1.2.840.10008.1.2.4.50"),
        ),
    ]
    for name, path, syntax in cases:
        with listen_process(root / f"node-{path.stem}") as node:
            idle = rss_kib(node.pid)
            started = time.perf_counter()
            status = send_file(node.port, path, called="CXR_TRIAGE", syntax=syntax)
            seconds = time.perf_counter() - started
            peak = peak_rss_kib(node.pid)
            kept = [p for p in node.inbox.iterdir() if not p.name.startswith(".")]
        answer = "no response" if status is None else f"0x{status:04X}"
        print(
            f"hostile: {name} ({path.stat().st_size:,} bytes): {answer} in {seconds:.2f} s, "
            f"receiver +{(peak - idle) / 1024:.0f} MiB above idle, {len(kept)} file(s) kept"
        )
    small = write_sparse_radiograph(root / "small.dcm", radiograph_header(64, 64), 8192)
    with listen_process(root / "node-flood", CXR_LISTEN_PEERS="*@127.0.0.0/8") as node:
        with bare_connections(node.port, 400, bind="127.0.0.3") as held:
            started = time.perf_counter()
            answered, _ = echo(node.port, called="CXR_TRIAGE")
            status = send_file(node.port, small, called="CXR_TRIAGE")
            seconds = time.perf_counter() - started
        text = node.log.read_text()
    print(
        f"hostile: {len(held)} bare TCP connections held open from 127.0.0.3: C-ECHO "
        f"{'answered' if answered else 'refused'} and C-STORE "
        f"{'Success' if status == 0 else status} from 127.0.0.1 in {seconds:.2f} s; "
        f"{text.count('refused a connection from 127.0.0.3')} log line(s) about the flood"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--objects", type=int, default=10)
    m.add_argument("--size-mib", type=int, default=1024)
    e = sub.add_parser("echo")
    e.add_argument("--slow", type=int, default=10)
    e.add_argument("--echoes", type=int, default=20)
    lat = sub.add_parser("latency")
    lat.add_argument("--files", type=int, default=5)
    lat.add_argument("--model", type=Path, default=None)
    sub.add_parser("hostile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as folder:
        root = Path(folder)
        if args.what == "memory":
            memory(args.objects, args.size_mib, root)
        elif args.what == "echo":
            echo_under_drip(args.slow, args.echoes, root)
        elif args.what == "hostile":
            hostile(root)
        else:
            latency(args.files, args.model, root)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
