"""The one-page model card report (``report.md``) written next to evaluation metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.card import ModelCard

_ROWS = (
    ("Accuracy", "accuracy"),
    ("Sensitivity (recall)", "sensitivity"),
    ("Specificity", "specificity"),
    ("PPV (precision)", "ppv"),
    ("NPV", "npv"),
    ("F1", "f1"),
    ("ROC AUC", "roc_auc"),
    ("PR AUC (average precision)", "pr_auc"),
)


def write_report(path: Path, card: ModelCard, metrics: dict[str, Any], plots: bool) -> None:
    ci = metrics.get("ci95", {})
    c = metrics["confusion"]
    point = card.operating_point
    split = card.data.get("split", {})
    lines = [
        f"# Model card and evaluation: {card.model_version}",
        "",
        "**Not for diagnostic use.** Research and worklist-prioritisation aid; no case is ever",
        "removed from the reading queue.",
        "",
        "## Intended use",
        card.intended_use,
        "",
        "## Model",
        f"- Input: whole image squashed to {card.input_size} x {card.input_size} px, "
        f"preprocessing `{card.preprocessing_version}` (see `model/preprocess.py`).",
        f"- Network: residual separable CNN, {card.training.get('parameters', '?')} parameters,"
        f" trained from scratch (no pretrained weights) in "
        f"{card.training.get('fit_wall_seconds', '?')} s on {card.training.get('machine', '?')}.",
        f"- Operating point (fitted on the validation split only): Platt scaling, temperature "
        f"{point.temperature:.3f} and bias {point.bias:.3f}; PNEUMONIA at probability >= "
        f"{point.threshold:.4f} "
        f"(priority URGENT; validation sensitivity target {point.target_sensitivity}); "
        f"SUSPECT at >= {point.suspect_threshold:.4f} (validation sensitivity target "
        f"{point.suspect_target_sensitivity}); ROUTINE below.",
        "",
        "## Training data",
        f"- {card.data.get('source', 'unknown')}; manifest SHA-256 "
        f"`{str(card.data.get('manifest_sha256', ''))[:16]}…`.",
        f"- Patient-level split: train {split.get('train', {})}, validation "
        f"{split.get('validation', {})}.",
        "",
        f"## Evaluation on `{metrics.get('data', '?')}`",
        f"{metrics['n']} images scored, {metrics.get('n_rejected', 0)} refused by the reader "
        f"{metrics.get('rejected_by_reason', {}) or ''}. Threshold {metrics['threshold']:.4f}.",
        "",
        "| metric | value | 95 % CI (bootstrap) |",
        "|---|---|---|",
    ]
    for title, key in _ROWS:
        low, high = ci.get(key, (float("nan"), float("nan")))
        lines.append(f"| {title} | {metrics[key]:.4f} | {low:.4f} – {high:.4f} |")
    lines += [
        f"| Brier score | {metrics['brier']:.4f} | |",
        f"| Expected calibration error | {metrics['ece']:.4f} | |",
        "",
        f"Confusion at the threshold: TP {c['tp']}, FP {c['fp']}, TN {c['tn']}, FN {c['fn']}.",
        "",
    ]
    if plots:
        lines += [
            "![ROC](roc.png) ![PR](pr.png)",
            "",
            "![confusion](confusion.png) ![calibration](calibration.png)",
            "",
        ]
    lines += [
        "## Limits",
        "- Trained on one centre's pediatric (1-5 y) frontal radiographs, already 8-bit and "
        "display-windowed; other sites, adults, laterals and portable ICU films are outside "
        "the training distribution (the worker flags or rejects them).",
        "- Normals from other sources are known to look different from the training normals:"
        " expect specificity to be the weak side on new data, and validate locally with "
        "`cxr-triage evaluate` before go-live.",
        "- The label is pneumonia vs. normal only; it does not distinguish bacterial from "
        "viral pneumonia and says nothing about other findings.",
        "- Probabilities are calibrated on the validation split (Platt scaling); "
        "calibration on another population must be checked with the curve above.",
        "",
    ]
    path.write_text("\n".join(lines))
