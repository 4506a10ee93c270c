"""``train``, ``evaluate`` and ``predict``: the model's commands.

TensorFlow is imported inside each command, never at module import, so the service
commands (``worklist``, ``status``) start in a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli.app import app, typer_app

if TYPE_CHECKING:
    import numpy as np

    from model.predict import Classifier
    from model.prediction import Prediction

DEFAULT_CACHE = Path.home() / ".cache" / "cxr-triage"

TargetSensitivity = Annotated[
    float,
    typer.Option(
        min=0.5,
        max=1.0,
        help="Label threshold (PNEUMONIA, URGENT): the highest probability that still gives "
        "this sensitivity on the validation split.",
    ),
]
SuspectSensitivity = Annotated[
    float,
    typer.Option(
        min=0.5,
        max=1.0,
        help="SUSPECT cut-off: the highest probability giving this (higher) validation "
        "sensitivity; cases between it and the threshold are read before ROUTINE ones.",
    ),
]


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
    target_sensitivity: TargetSensitivity = 0.95,
    suspect_sensitivity: SuspectSensitivity = 0.99,
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
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Start from this model directory's weights (fine-tuning) instead of a "
            "random initialisation.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    field_of_view: Annotated[
        bool,
        typer.Option(
            help="Train on random crops of varied aspect and area (see model/geometry.py), "
            "so the film's framing carries no label information."
        ),
    ] = True,
    fov_full_view: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of uncropped training views.")
    ] = 0.2,
    fov_max_aspect: Annotated[
        float, typer.Option(min=1.2, max=3.0, help="Widest training crop (width/height).")
    ] = 1.9,
    crop_consistency: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Pair each training view with a tighter top-and-bottom crop of itself and "
            "penalise the squared gap between their logits with this weight (0: off; see "
            "model/consistency.py).",
        ),
    ] = 0.0,
) -> None:
    """Train the CNN on a patient-level split, calibrate it and write a model directory.

    The validation split is carved from the train folder by patient (never the official
    test split); the threshold, temperature and priority cut-offs are fitted on it.
    """
    _quiet_tensorflow()
    from ingest import read_image
    from model.geometry import FieldOfView
    from model.train import TrainConfig
    from model.train import train as run_training

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
        suspect_target_sensitivity=suspect_sensitivity,
        max_images=max_images,
        steps_per_epoch=steps_per_epoch,
        field_of_view=field_of_view,
        fov=FieldOfView(aspect=(0.95, fov_max_aspect), full_view=fov_full_view),
        init_from=init_from,
        crop_consistency=crop_consistency,
    )
    if model_version:
        config = dataclasses.replace(config, model_version=model_version)
    card = run_training(config, lambda path: read_image(path).pixels)
    m = card.validation_metrics
    typer.echo(
        f"{card.model_version}: validation ROC AUC {m['roc_auc']:.4f}, sensitivity "
        f"{m['sensitivity']:.3f}, specificity {m['specificity']:.3f} at threshold "
        f"{card.operating_point.threshold:.3f}; wrote {out}"
    )


@app.command(rich_help_panel="Model")
def calibrate(
    model: Annotated[
        Path | None,
        typer.Option(
            help="Model directory. With --data: recalibrated in place. With --site: the "
            "source (default CXR_MODEL_PATH, else the shipped model), left untouched.",
            exists=True,
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="The pediatric-cxr folder the model was trained on: refit on the model's own "
            "validation split.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    site: Annotated[
        Path | None,
        typer.Option(
            help="A site's labelled sample (NORMAL/ and PNEUMONIA/ with DICOM, JPEG or PNG "
            "files): refit probabilities and cut-offs for that site into --out.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="With --site: the new model directory to write (must not exist)."),
    ] = None,
    site_name: Annotated[
        str | None,
        typer.Option(help="With --site: the suffix of the new model_version (default: folder)."),
    ] = None,
    confidence: Annotated[
        float | None,
        typer.Option(
            min=0.5,
            max=0.999,
            help="With --site: keep the targets as a Clopper-Pearson lower bound at this "
            "confidence (needs >= 45 pneumonias at 0.9; costs specificity on small samples). "
            "Default: the split-conformal rule (expected site sensitivity >= target).",
        ),
    ] = None,
    target_sensitivity: TargetSensitivity = 0.95,
    suspect_sensitivity: SuspectSensitivity = 0.99,
    cache_dir: Annotated[
        Path, typer.Option(help="Where the decoded uint8 arrays are cached.")
    ] = DEFAULT_CACHE,
) -> None:
    """Refit the probability calibration and both cut-offs, never the weights.

    --data: on the model's own validation split (the card is rewritten in place; refuses
    data that do not give the split the model was trained with).

    --site --out: on a deploying site's labelled sample, into a new model directory whose
    model_version carries the site's name. Cut-offs keep their meaning (URGENT at site
    sensitivity >= 0.95, SUSPECT >= 0.99) under a small-sample guarantee, not as a point
    estimate; the card records the sample and the before/after metrics. Run evaluate and a
    shadow period on it before go-live (README: Deploying at a new site).
    """
    if (data is None) == (site is None):
        raise typer.BadParameter("give exactly one of --data (own validation) or --site")
    _quiet_tensorflow()
    if site is not None:
        _calibrate_site(
            model, site, out, site_name, confidence, target_sensitivity, suspect_sensitivity
        )
        return
    if model is None:
        raise typer.BadParameter("--data recalibrates a model in place: give --model")
    from ingest import read_image
    from model.recalibrate import recalibrate

    card = recalibrate(
        model,
        data,  # type: ignore[arg-type]
        cache_dir,
        lambda path: read_image(path).pixels,
        target_sensitivity,
        suspect_sensitivity,
    )
    m, point = card.validation_metrics, card.operating_point
    typer.echo(
        f"{card.model_version}: threshold {point.threshold:.4f} (validation sensitivity "
        f"{m['sensitivity']:.3f}, specificity {m['specificity']:.3f}); suspect cut-off "
        f"{point.suspect_threshold:.4f} (sensitivity {m['sensitivity_at_suspect_threshold']:.3f})"
    )


def _calibrate_site(
    model: Path | None,
    site: Path,
    out: Path | None,
    site_name: str | None,
    confidence: float | None,
    target_sensitivity: float,
    suspect_sensitivity: float,
) -> None:
    from rich.console import Console
    from rich.table import Table

    from model.card import SHIPPED_DIR
    from model.site_calibration import SiteSampleError, calibrate_site

    if out is None:
        raise typer.BadParameter("--site writes a new model directory: give --out")
    classifier = _load_classifier(model)
    source_dir = model or _default_model_dir()
    try:
        result = calibrate_site(
            classifier,
            site,
            out,
            source_dir=source_dir if source_dir.is_dir() else SHIPPED_DIR,
            site_name=site_name,
            target_sensitivity=target_sensitivity,
            suspect_target_sensitivity=suspect_sensitivity,
            confidence=confidence,
        )
    except (SiteSampleError, FileExistsError) as error:
        typer.echo(f"calibrate: {error}", err=True)
        raise typer.Exit(2) from None
    table = Table(title=f"{site} ({result.before['n']} images)")
    for column in ("", "before", "after (in sample)", "after (cross-validated)"):
        table.add_column(column, justify="right")
    cross = result.cross_validated
    for key in ("sensitivity", "specificity", "ece"):
        table.add_row(
            key,
            f"{result.before[key]:.3f}",
            f"{result.after[key]:.3f}",
            f"{cross[key]:.3f}",
        )
    table.add_row(
        "ROC AUC", f"{result.before['roc_auc']:.3f}", f"{result.after['roc_auc']:.3f}", ""
    )
    table.add_row(
        "URGENT cut-off",
        f"{result.before['threshold']:.4f}",
        f"{result.after['threshold']:.4f}",
        "",
    )
    Console().print(table)
    if result.content is not None:
        record = result.content.record
        typer.echo(
            f"content check on the site's {record['films']} films: refused "
            f"{record['refused_before']} before, {record['refused_after_in_sample']} after "
            f"({record['refused_after_leave_one_out']} leave-one-out); refusal cut-off "
            f"{record['reject_threshold_before']:.2f} -> {record['reject_threshold']:.2f} "
            f"(ceiling {record['ceiling']:.2f})"
        )
    typer.echo(
        f"wrote {out} as {result.card.model_version}; plots in {out / 'evaluation'}. "
        "Evaluate it, run it in shadow, then point CXR_MODEL_PATH at it."
    )


def _default_model_dir() -> Path:
    from model.card import SHIPPED_DIR
    from worker.settings import get_settings

    configured = get_settings().model_path
    return Path(configured) if configured else SHIPPED_DIR


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


ModelOption = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="Model directory (model.keras + model_card.json). Default: "
        "CXR_MODEL_PATH, else the model shipped with cxr-triage.",
    ),
]


@app.command(rich_help_panel="Model")
def evaluate(
    data: Annotated[
        Path,
        typer.Option(
            help="Folder with NORMAL/ and PNEUMONIA/ subfolders of JPEG, PNG or DICOM files.",
            exists=True,
            file_okay=False,
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where metrics.json, report.md and the plots go.")],
    model: ModelOption = None,
    bootstrap: Annotated[
        int, typer.Option(min=0, help="Bootstrap rounds for the 95 % intervals (0: none).")
    ] = 2000,
) -> None:
    """Evaluate the model on labelled images: metrics with 95 % intervals, plots, report.

    Files are read exactly as the worker reads them; files the worker would refuse (a
    lateral view, a CT, a broken file) are counted in ``n_rejected`` and not scored.
    This is how a hospital validates the model on its own data before go-live.
    """
    _quiet_tensorflow()
    from model.evaluate import evaluate_folder

    classifier = _load_classifier(model)
    metrics = evaluate_folder(classifier, data, out, bootstrap=bootstrap)
    typer.echo(
        f"n={metrics['n']} (rejected {metrics['n_rejected']}): accuracy {metrics['accuracy']:.4f}"
        f", sensitivity {metrics['sensitivity']:.4f}, specificity {metrics['specificity']:.4f}, "
        f"ROC AUC {metrics['roc_auc']:.4f}; wrote {out / 'metrics.json'} and {out / 'report.md'}"
    )


@app.command(rich_help_panel="Model")
def predict(
    files: Annotated[list[Path], typer.Argument(help="Images to score (DICOM, JPEG, PNG).")],
    model: ModelOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per file, in a JSON list.")
    ] = False,
    heatmap: Annotated[
        Path | None,
        typer.Option(help="Write a Grad-CAM overlay PNG per scored file into this folder."),
    ] = None,
) -> None:
    """Score files through the same loading path as the worker: probability, label, priority.

    A file the worker would refuse is reported with its reason (exit code 1 if any file
    was refused). Not for diagnostic use.
    """
    import json

    _quiet_tensorflow()
    from ingest import IngestError, load_scorable
    from worker.population import not_analysed, population_flags

    classifier = _load_classifier(model)
    results: list[dict[str, object]] = []
    for path in files:
        try:
            image, eligibility = load_scorable(path)
        except IngestError as error:
            results.append(
                {
                    "file": str(path),
                    "status": "rejected",
                    "reason": str(error.reason),
                    "message": error.message,
                }
            )
            continue
        result = classifier.predict([image.pixels])[0]
        refused = not_analysed(result, eligibility.flags)
        if refused is not None:
            results.append(
                {
                    "file": str(path),
                    "status": "rejected",
                    "reason": refused.reason.value,
                    "message": refused.detail,
                }
            )
            continue
        entry: dict[str, object] = {
            "file": str(path),
            "status": "scored",
            "probability": result.probability,
            "label": str(result.label),
            "priority": str(result.priority),
            "threshold": result.threshold,
            "model_version": result.model_version,
            "flags": list(population_flags(result, eligibility.flags)),
            "content_distance": result.content_distance,
        }
        if heatmap is not None:
            entry["heatmap"] = str(_write_heatmap(classifier, image.pixels, result, path, heatmap))
        results.append(entry)
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    else:
        for entry in results:
            if entry["status"] == "scored":
                typer.echo(
                    f"{entry['file']}: {entry['probability']:.4f} {entry['label']} "
                    f"[{entry['priority']}]"
                    + (
                        f" flags={','.join(entry['flags'])}"  # type: ignore[arg-type]
                        if entry["flags"]
                        else ""
                    )
                )
            else:
                typer.echo(f"{entry['file']}: rejected ({entry['reason']}): {entry['message']}")
    if any(entry["status"] != "scored" for entry in results):
        raise typer.Exit(1)


def _load_classifier(model: Path | None) -> Classifier:
    from model.predict import Classifier
    from worker.settings import get_settings

    try:
        return Classifier.load(model or get_settings().model_path)
    except (FileNotFoundError, ValueError) as error:
        raise typer.BadParameter(str(error), param_hint="--model") from error


def _write_heatmap(
    classifier: Classifier, grey: np.ndarray, result: Prediction, source: Path, out_dir: Path
) -> Path:
    from model.overlay import overlay_heatmap, result_caption

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{source.stem}.heatmap.png"
    overlay_heatmap(grey, classifier.heatmap(grey), result_caption(result)).save(target)
    return target


content_check_app = typer_app(
    help="The content check: is an image a chest radiograph of the model's population?",
    no_args_is_help=True,
)
app.add_typer(content_check_app, name="content-check", rich_help_panel="Model")


@content_check_app.command("fit")
def content_check_fit(
    model: Annotated[
        Path,
        typer.Option(
            help="Model directory; content_check.npz is written beside the weights.",
            exists=True,
            file_okay=False,
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(
            help="The pediatric-cxr folder the model was trained on.", exists=True, file_okay=False
        ),
    ],
    population_quantile: Annotated[
        float,
        typer.Option(
            min=0.5,
            max=0.999,
            help="Validation quantile of the distance above which an image is flagged "
            "outside_training_population (still scored). The refusal cut-off is placed "
            "between the validation images and the non-chest reference set.",
        ),
    ] = 0.985,
    cache_dir: Annotated[
        Path, typer.Option(help="Where the decoded uint8 arrays are cached.")
    ] = DEFAULT_CACHE,
) -> None:
    """Fit the content check on the model's training split; cut-offs on its validation split
    and the non-chest reference set.

    The weights are untouched. Refuses if the features cannot separate the validation images
    from the non-chest set with a margin (no safe cut-off: nothing is written), and if the
    data do not give the split the model was trained with. Rerun after every retraining:
    the statistics belong to one network.
    """
    _quiet_tensorflow()
    from ingest import read_image
    from model.content_fit import fit_model_directory

    try:
        check, card = fit_model_directory(
            model,
            data,
            cache_dir,
            lambda path: read_image(path).pixels,
            population_quantile,
        )
    except (ValueError, FileNotFoundError) as error:  # not the model's data, or incomplete
        raise typer.BadParameter(str(error), param_hint="--data") from error
    fitted = card.content_check
    typer.echo(
        f"{card.model_version}: content check on {check.dimension} features; flag above "
        f"{check.population_threshold:.2f}, reject above {check.reject_threshold:.2f} "
        f"(ceiling {check.ceiling:.2f}; validation: {fitted['validation_rejected']:.1%} "
        f"rejected, {fitted['validation_flagged_or_rejected']:.1%} flagged or rejected; "
        f"non-chest set: {fitted['nonchest_refused']}/{len(fitted['nonchest_images'])} "
        "rejected)"
    )
