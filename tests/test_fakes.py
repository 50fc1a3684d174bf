"""The unit tests' fakes (tests/fakes.py) keep the method names and parameters of the services
they stand for.

A fake that drifted from its service would let a step's unit test pass against a call the real
service does not have; this check makes such a drift fail here, by name.
"""

from __future__ import annotations

import inspect

import pytest

from shared.numerai_client import NumeraiClient
from shared.storage.archive import Archive
from shared.storage.ledger import Ledger
from shared.storage.lock import RunLock
from shared.storage.models import ModelStore
from shared.storage.run_records import RunRecords
from tests import fakes

# Helpers a test calls to arrange a fake's state; the real services have no such method.
TEST_HELPERS = {"add", "list"}


@pytest.mark.parametrize(
    ("fake", "real"),
    [
        (fakes.FakeLedger, Ledger),
        (fakes.FakeArchive, Archive),
        (fakes.FakeRunRecords, RunRecords),
        (fakes.FakeModelStore, ModelStore),
        (fakes.FakeNumerai, NumeraiClient),
        (fakes.FakeLock, RunLock),
    ],
)
def test_each_fake_method_is_the_real_one(fake: type, real: type) -> None:
    methods = [
        name
        for name, _ in inspect.getmembers(fake, inspect.isfunction)
        if not name.startswith("_") and name not in TEST_HELPERS
    ]
    assert methods, f"{fake.__name__} fakes nothing"
    for name in methods:
        assert hasattr(real, name), f"{real.__name__} has no method {name}()"
        faked = list(inspect.signature(getattr(fake, name)).parameters)
        actual = list(inspect.signature(getattr(real, name)).parameters)
        assert faked == actual, (
            f"{fake.__name__}.{name}{faked} is not {real.__name__}.{name}{actual}"
        )
