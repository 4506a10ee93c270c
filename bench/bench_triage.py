"""The worker's bookkeeping per image, in one process: ``Pipeline.triage`` next to bare decode.

    python bench/bench_triage.py [--n 160] [--db sqlite|postgresql] [--scorer fake|model]
                                 [--profile]

No Celery, no broker: N distinct dataset JPEGs are admitted (:class:`worker.intake.Intake`,
timed as ``admit``), then triaged task by task in the watcher's batches of ``CXR_BATCH_SIZE``
(8) with the worker's reduced decode, timed as ``triage``. ``bare`` is ``load_scorable`` plus
the scorer on the same files in the same batches. With ``--scorer fake`` (the default) the
model is :class:`tests.fakes.FakeScorer` and costs nothing, so ``triage - bare`` is what the
claim, the staging, the record, the drift counts and the archive move cost per image.
``--profile`` prints the cProfile of the triage run (top 25 by cumulative time).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db import migrate
from db.engine import make_engine, make_session_factory
from ingest.loading import load_scorable
from ingest.watcher import Origin
from tests.conftest import create_pg_database, drop_pg_database
from tests.corpus import dataset_jpegs
from tests.fakes import FakeScorer
from worker.intake import Intake
from worker.pipeline import Pipeline
from worker.resources import get_decode_min_side
from worker.scoring import Scorer
from worker.settings import Settings


def scorer_for(kind: str, batch_size: int) -> Scorer:
    if kind == "fake":
        return FakeScorer()
    from model.card import SHIPPED_DIR
    from model.predict import Classifier

    classifier = Classifier.load(SHIPPED_DIR)
    classifier.warm_up(batch_size)
    return classifier


def bare(files: list[Path], scorer: Scorer, batch_size: int, min_side: int | None) -> float:
    started = time.perf_counter()
    for start in range(0, len(files), batch_size):
        images = [load_scorable(p, min_side=min_side)[0] for p in files[start : start + batch_size]]
        scorer.predict([image.pixels for image in images])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=160)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--scorer", choices=("fake", "model"), default="fake")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-triage-"))
    url = (
        f"sqlite:///{scratch / 'worklist.sqlite3'}" if args.db == "sqlite" else create_pg_database()
    )
    try:
        migrate.upgrade(url)
        settings = Settings(data_dir=scratch / "data", database_url=url)
        size = settings.batch_size
        min_side = get_decode_min_side()
        scorer = scorer_for(args.scorer, size)
        sources = dataset_jpegs(args.n)
        bare_s = min(bare(sources, scorer, size, min_side) for _ in range(2))
        settings.inbox.mkdir(parents=True)
        inbox = settings.inbox
        files = [Path(shutil.copy(p, inbox / f"{n}-{p.name}")) for n, p in enumerate(sources)]
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        batches: list[list[int]] = []
        intake = Intake(settings, sessions, lambda ids, origin: batches.append(list(ids)))
        started = time.perf_counter()
        for start in range(0, len(files), size):  # as the watcher admits a burst
            intake.admit_many([(p, Origin.LIVE) for p in files[start : start + size]])
        admit_s = time.perf_counter() - started
        published: list[int] = []
        pipeline = Pipeline(
            settings, sessions, lambda: scorer, on_scored=published.extend, decode_min_side=min_side
        )
        profile = cProfile.Profile()
        started = time.perf_counter()
        if args.profile:
            profile.enable()
        for n, ids in enumerate(batches):
            pipeline.triage(ids, token=f"task-{n}")
        profile.disable()
        triage_s = time.perf_counter() - started
        engine.dispose()
        assert len(published) == args.n, f"{len(published)} of {args.n} scored"
        n = args.n
        print(
            f"{args.db}, {args.scorer} scorer, {n} files, batches of {size}: "
            f"bare {bare_s / n * 1e3:.2f} ms/img ({n / bare_s:.0f} img/s); "
            f"triage {triage_s / n * 1e3:.2f} ms/img ({n / triage_s:.0f} img/s); "
            f"overhead {(triage_s - bare_s) / n * 1e3:.2f} ms/img; "
            f"admit {admit_s / n * 1e3:.2f} ms/file"
        )
        if args.profile:
            pstats.Stats(profile).sort_stats("cumulative").print_stats(60)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if args.db == "postgresql":
            drop_pg_database(url)


if __name__ == "__main__":
    main()
