from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model when it is there; otherwise an untrained network of the same
    architecture with a complete model card (the system under test is the plumbing, and the
    comparison with ``cxr-triage predict`` holds for any weights)."""
    from model.card import SHIPPED_DIR, WEIGHTS_FILE, ModelCard, OperatingPoint

    if (SHIPPED_DIR / "model_card.json").is_file():
        return SHIPPED_DIR
    import keras

    from model.network import build_model
    from model.preprocess import PREPROCESSING_VERSION

    keras.utils.set_random_seed(7)
    directory = tmp_path_factory.mktemp("model")
    build_model(96, widths=(8, 16, 32)).save(directory / WEIGHTS_FILE)
    ModelCard(
        model_version="e2e-untrained",
        input_size=96,
        preprocessing_version=PREPROCESSING_VERSION,
        labels=("NORMAL", "PNEUMONIA"),
        operating_point=OperatingPoint(
            temperature=1.0,
            threshold=0.5,
            suspect_threshold=0.2,
            target_sensitivity=0.95,
            suspect_target_sensitivity=0.99,
        ),
    ).save(directory)
    return directory
