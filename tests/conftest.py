"""Shared fixtures: a small generated round and one trained model per format.

Generated once per test session (training the Keras model is the slow part);
tests that change files copy them first.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from devkit.example_models import DEMO_PLAN, write_example_models
from devkit.synthetic import SyntheticRound, write_round

ROWS = 503  # not a multiple of any batch size the tests use
FEATURES = 60


@pytest.fixture(scope="session")
def small_round(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRound:
    """A 503-row, 60-feature round with no missing values."""
    return write_round(tmp_path_factory.mktemp("round"), rows=ROWS, n_features=FEATURES, seed=7)


@pytest.fixture(scope="session")
def example_models(tmp_path_factory: pytest.TempPathFactory, small_round: SyntheticRound) -> Path:
    """A folder with models.json and one trained model per format (see DEMO_PLAN)."""
    directory = tmp_path_factory.mktemp("models")
    write_example_models(directory, small_round.feature_sets, DEMO_PLAN)
    return directory


@pytest.fixture(autouse=True)
def _quiet_libraries() -> None:
    # The storage SDK logs every HTTP request at INFO.
    logging.getLogger("azure").setLevel(logging.WARNING)
