"""``cxr-triage worker`` with a fake model, for measuring the shared parts.

    python bench/fake_worker.py [--model-ms MS] worker --concurrency 4 --hostname ...

Everything is the real worker (Celery prefork, the claim, staging, reading the file, the
record, the archive move, the results task, the lease keeper) except the model:
:class:`tests.fakes.FakeScorer`, which answers at once, or after ``--model-ms`` of sleep
per batch (a model running on cores that are not this machine's). So a machine with two
cores can run 32 worker processes and measure what they cost PostgreSQL and the broker,
not what TensorFlow costs. Bench-only: nothing in the product imports it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.prediction import Prediction
from tests.fakes import FakeScorer


@dataclass
class SleepingScorer(FakeScorer):
    """The fake scorer, taking ``delay_s`` per batch, as a model elsewhere would."""

    delay_s: float = 0.0

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        if self.delay_s:
            time.sleep(self.delay_s)
        return super().predict(images)


def main(argv: list[str]) -> None:
    delay_s = 0.0
    if argv[:1] == ["--model-ms"]:
        delay_s, argv = float(argv[1]) / 1000, argv[2:]
    from worker import resources

    # Before worker.tasks is imported (it binds get_scorer by name): every process of this
    # worker, the prefork children included, scores with the fake.
    resources.get_scorer = lru_cache(maxsize=1)(lambda: SleepingScorer(delay_s=delay_s))
    from worker.cli import app

    app(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
