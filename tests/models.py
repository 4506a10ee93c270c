"""Real, untrained classifiers for tests that need a model but not a good one."""

from __future__ import annotations

from model.card import ModelCard, OperatingPoint
from model.dataset import LABELS
from model.preprocess import PREPROCESSING_VERSION


def untrained_classifier(input_size: int = 64, seed: int = 7):  # type: ignore[no-untyped-def]
    """A :class:`model.predict.Classifier` around a freshly initialised network.

    The seed is chosen so the untrained logit has positive evidence somewhere, which makes
    its Grad-CAM map non-zero.
    """
    import keras

    from model.network import build_model
    from model.predict import Classifier

    keras.utils.set_random_seed(seed)
    card = ModelCard(
        model_version="untrained-test",
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
    return Classifier(build_model(input_size), card)
