"""Evaluate a model on a labelled folder (``NORMAL/``, ``PNEUMONIA/``) of any readable images.

This is how the shipped model is validated independently, and how a hospital checks it on
its own labelled studies before go-live: files go through the same loading path as the
worker (``ingest.load_scorable``), so a DICOM the worker would reject is reported as
rejected here too, never silently scored.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ingest import IngestError, load_scorable
from model.card import ModelCard
from model.dataset import LABELS
from model.metrics import classification_metrics
from model.plots import plot_calibration, plot_confusion, plot_pr, plot_roc
from model.predict import Classifier
from model.report import write_report

BATCH = 32


@dataclass(frozen=True)
class ScoredFile:
    """A labelled file the model scored (a row of the evaluation's predictions table)."""

    path: Path
    label: int
    probability: float


@dataclass(frozen=True)
class RejectedFile:
    """A labelled file the readers refused, with the :class:`ingest.Reason` value."""

    path: Path
    label: int
    reason: str


def labelled_files(data_dir: Path) -> list[tuple[Path, int]]:
    """Every regular file under ``DIR/NORMAL`` and ``DIR/PNEUMONIA`` (recursive, sorted)."""
    missing = [name for name in LABELS if not (data_dir / name).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{data_dir} must contain the subfolders {' and '.join(LABELS)}; missing: "
            f"{', '.join(missing)}"
        )
    files = [
        (path, label)
        for label, name in enumerate(LABELS)
        for path in sorted((data_dir / name).rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    ]
    if not files:
        raise FileNotFoundError(f"no files under {data_dir}/NORMAL or {data_dir}/PNEUMONIA")
    return files


def score_folder(
    classifier: Classifier,
    files: list[tuple[Path, int]],
    progress: bool = True,
    score: Callable[[Sequence[np.ndarray]], np.ndarray] | None = None,
) -> tuple[list[ScoredFile], list[RejectedFile]]:
    """Probabilities (or ``score``, e.g. raw logits) for every file the worker would score;
    the others with their reason."""
    score = score or classifier.probabilities
    scored: list[ScoredFile] = []
    rejected: list[RejectedFile] = []
    for batch in _batches(tqdm(files, desc="scoring", unit="img", disable=not progress)):
        images, kept = [], []
        for path, label in batch:
            try:
                # decoded as the worker decodes (reduced resolution where the codec allows):
                # the cut-offs fitted here sit exactly on some of these scores
                images.append(
                    load_scorable(path, min_side=classifier.card.decode_min_side)[0].pixels
                )
            except IngestError as error:
                rejected.append(RejectedFile(path, label, error.reason.value))
                continue
            kept.append((path, label))
        for (path, label), p in zip(kept, score(images), strict=True):
            scored.append(ScoredFile(path, label, float(p)))
    return scored, rejected


def evaluate_folder(
    classifier: Classifier,
    data_dir: Path,
    out_dir: Path,
    bootstrap: int = 2000,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``data_dir``, write metrics.json, the four plots, predictions.csv and report.md."""
    scored, rejected = score_folder(classifier, labelled_files(data_dir), progress)
    if not scored:
        raise ValueError(f"none of the files under {data_dir} could be scored")
    labels = np.array([s.label for s in scored])
    probabilities = np.array([s.probability for s in scored])
    metrics = write_evaluation(
        out_dir,
        classifier.card,
        labels,
        probabilities,
        bootstrap,
        data=str(data_dir),
        rejected_by_reason=dict(Counter(r.reason for r in rejected)),
    )
    _write_predictions(out_dir / "predictions.csv", scored, rejected)
    return metrics


def write_evaluation(
    out_dir: Path,
    card: ModelCard,
    labels: np.ndarray,
    probabilities: np.ndarray,
    bootstrap: int,
    data: str,
    rejected_by_reason: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Metrics at ``card``'s cut-offs, metrics.json, the four plots and report.md."""
    point = card.operating_point
    metrics = classification_metrics(labels, probabilities, point.threshold, bootstrap=bootstrap)
    metrics.update(
        model_version=card.model_version,
        data=data,
        n_rejected=sum((rejected_by_reason or {}).values()),
        rejected_by_reason=rejected_by_reason or {},
        suspect_threshold=point.suspect_threshold,
        sensitivity_at_suspect_threshold=float(
            np.mean(probabilities[labels == 1] >= point.suspect_threshold)
        )
        if (labels == 1).any()
        else float("nan"),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    both = (labels == 1).any() and (labels == 0).any()
    if both:
        plot_roc(labels, probabilities, point.threshold, metrics["roc_auc"], out_dir / "roc.png")
        plot_pr(labels, probabilities, metrics["pr_auc"], out_dir / "pr.png")
    plot_confusion(metrics["confusion"], out_dir / "confusion.png")
    plot_calibration(labels, probabilities, metrics["ece"], out_dir / "calibration.png")
    write_report(out_dir / "report.md", card, metrics, plots=both)
    return metrics


def _batches(items: Iterable[tuple[Path, int]]) -> Iterator[list[tuple[Path, int]]]:
    batch: list[tuple[Path, int]] = []
    for item in items:
        batch.append(item)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_predictions(path: Path, scored: list[ScoredFile], rejected: list[RejectedFile]) -> None:
    lines = ["file,label,probability,rejected_reason"]
    lines += [f"{s.path},{LABELS[s.label]},{s.probability:.6f}," for s in scored]
    lines += [f"{r.path},{LABELS[r.label]},,{r.reason}" for r in rejected]
    path.write_text("\n".join(lines) + "\n")
