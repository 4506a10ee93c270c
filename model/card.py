"""The model card: everything needed to use the weights correctly, stored beside them.

Thresholds, temperature, input size and the preprocessing version live here and nowhere
in code, so a re-calibration or a new model is a data change, and a worklist row can
always say which model and threshold scored it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

CARD_FILE = "model_card.json"
WEIGHTS_FILE = "model.keras"
SHIPPED_DIR = Path(__file__).parent / "shipped"

INTENDED_USE = (
    "Research and worklist-prioritisation aid for frontal chest radiographs of children "
    "aged 1-5 years: passive notification that raises suspected pneumonia in the reading "
    "order. It never removes a case from the reading queue and does not diagnose. "
    "Not for diagnostic use; not a cleared medical device."
)


@dataclass(frozen=True)
class OperatingPoint:
    """Calibration and the two cut-offs of the reading priority, fitted on validation only.

    ``threshold`` is the operating point: the highest probability that still catches
    ``target_sensitivity`` of the validation pneumonias (the label), less a round-off margin
    of 1e-6. ``suspect_threshold``
    is a second, more sensitive cut-off: below the label threshold but above it sit the
    borderline cases a radiologist should still read before the routine ones.
    """

    temperature: float  # calibrated probability = sigmoid(logit / temperature + bias)
    threshold: float  # at or above: label PNEUMONIA, priority URGENT
    suspect_threshold: float  # at or above (and below threshold): priority SUSPECT
    target_sensitivity: float  # validation sensitivity of ``threshold``
    suspect_target_sensitivity: float  # validation sensitivity of ``suspect_threshold``
    # A site calibration (Platt scaling) also shifts the logit: another hospital's normals
    # sit higher on the network's scale, which a temperature alone cannot undo.
    bias: float = 0.0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.suspect_threshold <= self.threshold <= 1.0:
            raise ValueError(
                f"need 0 <= suspect_threshold ({self.suspect_threshold}) <= threshold "
                f"({self.threshold}) <= 1"
            )

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated P(pneumonia) for network logits."""
        return np.asarray(
            expit(np.asarray(logits, dtype=np.float64) / self.temperature + self.bias)
        )


@dataclass(frozen=True)
class ModelCard:
    model_version: str
    input_size: int
    preprocessing_version: str
    labels: tuple[str, ...]
    operating_point: OperatingPoint
    intended_use: str = INTENDED_USE
    training: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    validation_metrics: dict[str, Any] = field(default_factory=dict)
    # Set by ``cxr-triage calibrate --site``: the local sample and what it showed.
    site_calibration: dict[str, Any] = field(default_factory=dict)
    #: How ``content_check.npz`` was fitted and what it measured (``model.content_fit``).
    content_check: dict[str, Any] = field(default_factory=dict)

    @property
    def decode_min_side(self) -> int:
        """Shorter side a reader must keep when it decodes for this model: 2x its input.

        The squash to ``input_size`` is an antialiased bilinear resize; from twice the size
        or more it averages the same frequencies as from full resolution, so a reduced
        decode (``ingest.reduced``) scores within 0.02 of the full one.
        """
        return 2 * self.input_size

    def save(self, directory: Path) -> Path:
        path = directory / CARD_FILE
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path) -> ModelCard:
        path = directory / CARD_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {CARD_FILE} in {directory}: not a cxr-triage model")
        raw = json.loads(path.read_text())
        raw["labels"] = tuple(raw["labels"])
        raw.pop("tta", None)  # cards written before test-time augmentation was ruled out
        raw["operating_point"] = OperatingPoint(**raw["operating_point"])
        return cls(**raw)
