"""Shared fixtures: a small generated round, one trained model per format, and the
local services (Azurite, the Numerai sandbox) with those models deployed into them.

The round and models are generated once per session (training the Keras model is
the slow part); tests that change files copy them first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numerapi.base_api
import pytest

from devkit.azurite import ACCOUNT_KEY, Azurite
from devkit.example_models import DEMO_PLAN, MORE_FORMATS_PLAN, write_example_models
from devkit.local_stack import FAKE_PUBLIC_ID, FAKE_SECRET_KEY, LocalStack
from devkit.synthetic import SyntheticRound, write_round
from tests.support import TEST_PLAN, reports

SECRETS = (FAKE_PUBLIC_ID, FAKE_SECRET_KEY, ACCOUNT_KEY)
# The shortest piece of a secret that must never appear: shared/redaction.py's
# minimum, restated rather than imported so that this check cannot share a bug with it.
FRAGMENT = 8
ROWS = 503  # not a multiple of any batch size the tests use
# The longest tests (minutes each) start first: under `pytest -n`, none is left running alone at the end.
SLOWEST_FIRST = ("tests/test_package.py", "tests/test_soak.py", "tests/test_queue_scaleout.py")
FEATURES = 60


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the slowest test files to the front (a stable sort: the rest keep their order)."""
    items.sort(key=lambda item: not item.nodeid.startswith(SLOWEST_FIRST))


@pytest.fixture(scope="session")
def small_round(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRound:
    """A 503-row, 60-feature round with no missing values."""
    return write_round(tmp_path_factory.mktemp("round"), rows=ROWS, n_features=FEATURES, seed=7)


@pytest.fixture(scope="session")
def example_models(tmp_path_factory: pytest.TempPathFactory, small_round: SyntheticRound) -> Path:
    """A folder with models.json and the models of TEST_PLAN."""
    directory = tmp_path_factory.mktemp("models")
    write_example_models(directory, small_round.feature_sets, TEST_PLAN)
    return directory


@pytest.fixture(scope="session")
def all_formats(tmp_path_factory: pytest.TempPathFactory, small_round: SyntheticRound) -> Path:
    """A folder with models.json and one trained model of every format (the demo's models)."""
    directory = tmp_path_factory.mktemp("all-formats")
    write_example_models(directory, small_round.feature_sets, DEMO_PLAN + MORE_FORMATS_PLAN)
    return directory


@pytest.fixture(autouse=True)
def _quiet_libraries(caplog: pytest.LogCaptureFixture) -> None:
    # The storage SDK logs every HTTP request at INFO; caplog restores the level afterwards.
    caplog.set_level(logging.WARNING, logger="azure")


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One Azurite for the whole session; each test gets containers of its own."""
    with Azurite() as running:
        yield running


@pytest.fixture
def stack(azurite: Azurite) -> Iterator[LocalStack]:
    """A fresh Numerai sandbox and fresh containers on the session's Azurite."""
    with LocalStack(azurite) as local:
        yield local


@pytest.fixture
def deployed(
    stack: LocalStack,
    small_round: SyntheticRound,
    example_models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> LocalStack:
    """The example models deployed to the stack, and the app's settings in the environment."""
    stack.deploy(example_models, small_round)
    for name, value in stack.environ(tmp_path / "work").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BATCH_ROWS", "128")  # several batches per run
    # The client repoints numerapi's module constant; put it back after the test.
    monkeypatch.setattr(
        numerapi.base_api, "API_TOURNAMENT_URL", numerapi.base_api.API_TOURNAMENT_URL
    )
    return stack


@pytest.fixture
def no_secret_anywhere(
    request: pytest.FixtureRequest,
    deployed: LocalStack,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> Iterator[list[str]]:
    """After each row: no secret, nor any piece of one, in the logs (at DEBUG), the console, the
    reports or raised errors."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="azure")  # quieted elsewhere; here every header counts
    texts: list[str] = []  # rows add what they caught: exception messages, HTTP bodies
    yield texts
    captured = capfd.readouterr()
    # caplog.text holds only the current phase (teardown); the test's records are kept by phase.
    logged = [
        caplog.handler.format(r) for when in ("setup", "call") for r in caplog.get_records(when)
    ]
    everything = [
        *logged,
        captured.out,
        captured.err,
        *texts,
        *map(json.dumps, _reports_if_any(deployed)),
    ]
    found = "\0".join(everything)  # no fragment holds a NUL, so none spans two texts
    for fragment in secret_fragments(SECRETS):
        at = found.find(fragment)
        assert at < 0, (
            f"a piece of a secret leaked in {request.node.name}: ...{found[max(at - 80, 0) : at + 80]!r}..."
        )


def secret_fragments(secrets: tuple[str, ...]) -> list[str]:
    """Every FRAGMENT-character piece of each secret, as written and URL-encoded."""
    forms = {form for secret in secrets for form in (secret, quote(secret, safe=""))}
    return sorted(
        {form[i : i + FRAGMENT] for form in forms for i in range(len(form) - FRAGMENT + 1)}
    )


def _reports_if_any(stack: LocalStack) -> list[dict]:
    try:
        return reports(stack)
    except Exception:  # the results container may not exist when storage was down
        return []
