"""Real, untrained classifiers for tests that need a model but not a good one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from model.card import WEIGHTS_FILE, ModelCard, OperatingPoint
from model.dataset import LABELS
from model.network import DEFAULT_WIDTHS
from model.preprocess import PREPROCESSING_VERSION


def untrained_card(input_size: int, model_version: str = "untrained-test") -> ModelCard:
    """A complete model card with round-number cut-offs."""
    return ModelCard(
        model_version=model_version,
        input_size=input_size,
        preprocessing_version=PREPROCESSING_VERSION,
        labels=LABELS,
        operating_point=OperatingPoint(
            temperature=1.0,
            threshold=0.5,
            suspect_threshold=0.2,
            target_sensitivity=0.95,
            suspect_target_sensitivity=0.99,
        ),
    )


def untrained_classifier(  # type: ignore[no-untyped-def]
    input_size: int = 64, seed: int = 7, widths: Sequence[int] = DEFAULT_WIDTHS
):
    """A :class:`model.predict.Classifier` around a freshly initialised network.

    The seed is chosen so the untrained logit has positive evidence somewhere, which makes
    its Grad-CAM map non-zero.
    """
    import keras

    from model.network import build_model
    from model.predict import Classifier

    keras.utils.set_random_seed(seed)
    return Classifier(build_model(input_size, widths), untrained_card(input_size))


def save_untrained_model(
    directory: Path, input_size: int = 96, widths: Sequence[int] = (8, 16, 32), seed: int = 7
) -> Path:
    """Write an untrained model directory that ``Classifier.load`` accepts."""
    classifier = untrained_classifier(input_size, seed, widths)
    classifier.network.save(directory / WEIGHTS_FILE)
    classifier.card.save(directory)
    return directory
