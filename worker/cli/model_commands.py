"""``train``, ``evaluate`` and ``predict``: the model's commands.

TensorFlow is imported inside each command, never at module import, so the service
commands (``worklist``, ``status``) start in a fraction of a second.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.app import app

DEFAULT_CACHE = Path.home() / ".cache" / "cxr-triage"


@app.command(rich_help_panel="Model")
def train(
    data: Annotated[
        Path,
        typer.Option(
            help="The pediatric-cxr folder (MANIFEST.csv, train/, val/).",
            exists=True,
            file_okay=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Run directory for model.keras, model_card.json, curves.png, history.json."
        ),
    ],
    epochs: Annotated[
        int,
        typer.Option(
            min=1, help="Maximum epochs (early stopping on validation ROC AUC may end sooner)."
        ),
    ] = 40,
    input_size: Annotated[
        int, typer.Option(min=32, max=224, help="Square input size in px.")
    ] = 192,
    batch_size: Annotated[int, typer.Option(min=2)] = 32,
    learning_rate: Annotated[float, typer.Option(min=1e-6)] = 2e-3,
    validation_fraction: Annotated[
        float, typer.Option(min=0.05, max=0.5, help="Share of patients held out for validation.")
    ] = 0.15,
    seed: Annotated[
        int, typer.Option(help="Seed for the split, initialisation and augmentation.")
    ] = 20261125,
    patience: Annotated[
        int, typer.Option(min=1, help="Epochs without a better validation ROC AUC before stopping.")
    ] = 10,
    target_sensitivity: Annotated[
        float,
        typer.Option(
            min=0.5,
            max=1.0,
            help="The threshold is the highest giving this validation sensitivity.",
        ),
    ] = 0.95,
    urgent_specificity: Annotated[
        float,
        typer.Option(
            min=0.5,
            max=1.0,
            help="URGENT priority cut-off: the lowest giving this validation specificity.",
        ),
    ] = 0.98,
    max_images: Annotated[int | None, typer.Option(help="Subsample the data (smoke runs).")] = None,
    steps_per_epoch: Annotated[
        int | None, typer.Option(help="Cap batches per epoch (smoke runs).")
    ] = None,
    cache_dir: Annotated[
        Path, typer.Option(help="Where the decoded uint8 training array is cached.")
    ] = DEFAULT_CACHE,
    model_version: Annotated[
        str | None, typer.Option(help="Version string for the model card.")
    ] = None,
) -> None:
    """Train the CNN on a patient-level split, calibrate it and write a model directory.

    The validation split is carved from the train folder by patient (never the official
    test split); the threshold, temperature and priority cut-offs are fitted on it.
    """
    _quiet_tensorflow()
    from ingest import read_image
    from model.train import TrainConfig, train as run_training

    config = TrainConfig(
        data_dir=data,
        out_dir=out,
        cache_dir=cache_dir,
        epochs=epochs,
        batch_size=batch_size,
        input_size=input_size,
        learning_rate=learning_rate,
        validation_fraction=validation_fraction,
        seed=seed,
        patience=patience,
        target_sensitivity=target_sensitivity,
        urgent_target_specificity=urgent_specificity,
        max_images=max_images,
        steps_per_epoch=steps_per_epoch,
        **({"model_version": model_version} if model_version else {}),
    )
    card = run_training(config, lambda path: read_image(path).pixels)
    m = card.validation_metrics
    typer.echo(
        f"{card.model_version}: validation ROC AUC {m['roc_auc']:.4f}, sensitivity "
        f"{m['sensitivity']:.3f}, specificity {m['specificity']:.3f} at threshold "
        f"{card.operating_point.threshold:.3f}; wrote {out}"
    )


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
