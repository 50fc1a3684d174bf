"""The runner's package list follows numerai-predict's locks, and the deployable Pythons infra's."""

from __future__ import annotations

import re
from pathlib import Path

from shared.formats.pickle_python import DEPLOYABLE
from shared.formats.runner_packages import LOCK_PYTHONS, PACKAGES, runner_package

REPO = Path(__file__).resolve().parent.parent
# The package names of py3.11/, py3.12/ and py3.13/poetry.lock at runner_packages.RUNNER_COMMIT.
LOCK_NAMES = REPO / "tests" / "data" / "numerai_predict_lock_packages.txt"


def lock_names() -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for line in LOCK_NAMES.read_text().splitlines():
        header = re.fullmatch(r"\[py(3\.\d+)/poetry\.lock\]", line)
        if header:
            current = names.setdefault(header.group(1), set())
        elif line:
            current.add(line)
    return names


def test_each_lock_lists_exactly_its_packages() -> None:
    locks = lock_names()
    assert tuple(locks) == LOCK_PYTHONS
    for python, names in locks.items():
        listed = {p.name for p in PACKAGES.values() if p.versions[python] is not None}
        assert listed == names, python


def test_modules_are_found_by_import_name() -> None:
    assert runner_package("statsmodels.api").name == "statsmodels"
    assert runner_package("sklearn.ensemble._gb").name == "scikit-learn"
    assert runner_package("yaml").name == "pyyaml"
    assert runner_package("torch").versions == {"3.11": "2.8.0", "3.12": "2.8.0", "3.13": "2.10.0"}
    assert runner_package("no_such_module") is None


def test_the_deployable_pythons_include_every_one_infra_allows() -> None:
    bicep = (REPO / "infra" / "main.bicep").read_text()
    allowed = re.search(r"@allowed\(\[([^\]]*)\]\)\s*param pythonVersion", bicep).group(1)
    assert {int(v.split(".")[1]) for v in re.findall(r"'(3\.\d+)'", allowed)} <= set(DEPLOYABLE)
