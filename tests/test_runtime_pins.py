"""requirements.txt pins, for each Python, the versions of Numerai's hosted runner, which a
participant's pickle was built against; the venv must run exactly those."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"
PYTHONS = ("3.11", "3.12", "3.13")
PLATFORMS = (("linux", "x86_64"), ("linux", "aarch64"), ("darwin", "arm64"))

# The versions of numerai/numerai-predict's locks, py3.X/poetry.lock at the commits
# requirements.txt's header names (10e2fecc for 3.11 and 3.12, 19d17695 for 3.13), of the
# libraries a participant's pickle touches. numerai-tools is left to requirements.txt's header.
LOCKS = {
    "3.11": {
        "catboost": "1.2.8",
        "cloudpickle": "3.1.1",
        "joblib": "1.5.2",
        "keras": "3.11.3",
        "lightgbm": "4.6.0",
        "numpy": "2.1.3",
        "pandas": "2.3.2",
        "polars": "1.33.1",
        "pyarrow": "21.0.0",
        "scikit-learn": "1.6.1",
        "scipy": "1.16.2",
        "tensorflow": "2.19.0",
        "xgboost": "3.0.5",
    },
    "3.12": {
        "catboost": "1.2.8",
        "cloudpickle": "3.1.1",
        "joblib": "1.5.2",
        "keras": "3.11.3",
        "lightgbm": "4.5.0",
        "numpy": "2.1.3",
        "pandas": "2.3.2",
        "polars": "1.33.1",
        "pyarrow": "18.1.0",
        "scikit-learn": "1.6.1",
        "scipy": "1.16.2",
        "tensorflow": "2.19.0",
        "xgboost": "3.0.5",
    },
    "3.13": {
        "catboost": "1.2.10",
        "cloudpickle": "3.1.2",
        "joblib": "1.5.3",
        "keras": "3.13.2",
        "lightgbm": "4.5.0",
        "numpy": "2.2.6",
        "pandas": "2.3.3",
        "polars": "1.38.1",
        "pyarrow": "18.1.0",
        "scikit-learn": "1.6.1",
        "scipy": "1.17.1",
        "tensorflow": "2.20.0",
        "xgboost": "3.0.5",
    },
}
# Where a pin departs from its lock on purpose (requirements.txt's header says why).
DEPARTURES = {
    ("3.11", "keras"): "3.12.4",  # the lock's 3.11.3 runs code from a crafted .keras file
    ("3.12", "keras"): "3.12.4",
}


def requirements() -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def pins(environment: dict[str, str] | None = None) -> dict[str, str]:
    """Name to version of every requirement whose marker holds in `environment` (default: here)."""
    chosen: dict[str, str] = {}
    for requirement in requirements():
        if requirement.marker is None or requirement.marker.evaluate(environment):
            name = canonicalize_name(requirement.name)
            assert name not in chosen, f"{name} is pinned twice"
            [specifier] = requirement.specifier
            assert specifier.operator == "==", f"{requirement} is not pinned with =="
            chosen[name] = specifier.version
    return chosen


def test_every_python_and_platform_gets_one_pin_of_every_library() -> None:
    def libraries(environment: dict[str, str]) -> set[str]:
        # tensorflow-cpu and xgboost-cpu install the same modules as tensorflow and xgboost.
        return {name.removesuffix("-cpu") for name in pins(environment)}

    here = libraries({})
    assert {
        "pandas",
        "numpy",
        "scikit-learn",
        "cloudpickle",
        "tensorflow",
        "keras",
        "xgboost",
    } <= here
    assert "torch" not in here  # see requirements.txt: ONNX instead of gigabytes of CUDA
    for python in PYTHONS:
        for system, machine in PLATFORMS:
            environment = {
                "python_version": python,
                "sys_platform": system,
                "platform_machine": machine,
            }
            assert libraries(environment) == here, environment


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("system, machine", PLATFORMS)
def test_every_python_gets_its_locks_versions(python: str, system: str, machine: str) -> None:
    environment = {"python_version": python, "sys_platform": system, "platform_machine": machine}
    chosen = {name.removesuffix("-cpu"): pinned for name, pinned in pins(environment).items()}
    for library, locked in LOCKS[python].items():
        expected = DEPARTURES.get((python, library), locked)
        assert chosen[library] == expected, f"{library} on Python {python}: {chosen[library]}"


def test_linux_x86_64_gets_the_cpu_only_builds() -> None:
    chosen = pins({"sys_platform": "linux", "platform_machine": "x86_64"})
    assert "tensorflow-cpu" in chosen and "xgboost-cpu" in chosen


@pytest.mark.parametrize("name, pinned", sorted(pins().items()))
def test_the_venv_has_the_pinned_version(name: str, pinned: str) -> None:
    where = (
        f"Python {sys.version_info[0]}.{sys.version_info[1]} on {sys.platform} {platform.machine()}"
    )
    assert version(name) == pinned, f"{name} on {where}: run make setup"
