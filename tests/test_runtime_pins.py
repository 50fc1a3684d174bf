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
PYTHONS = ("3.11", "3.12")
PLATFORMS = (("linux", "x86_64"), ("linux", "aarch64"), ("darwin", "arm64"))


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


def test_linux_x86_64_gets_the_cpu_only_builds() -> None:
    chosen = pins({"sys_platform": "linux", "platform_machine": "x86_64"})
    assert "tensorflow-cpu" in chosen and "xgboost-cpu" in chosen


@pytest.mark.parametrize("name, pinned", sorted(pins().items()))
def test_the_venv_has_the_pinned_version(name: str, pinned: str) -> None:
    where = (
        f"Python {sys.version_info[0]}.{sys.version_info[1]} on {sys.platform} {platform.machine()}"
    )
    assert version(name) == pinned, f"{name} on {where}: run make setup"
