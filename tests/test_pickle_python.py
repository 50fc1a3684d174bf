"""Telling which Python built a pickle, from pickles each installed Python builds.

No pickle here is ever loaded: the detector reads opcodes only.
"""

from __future__ import annotations

import gzip
import json
import pickle
import subprocess
from pathlib import Path

import cloudpickle
import pytest

from devkit.pickles import find_python, pickle_many
from shared.formats.pickle_python import OPCODES, built_on

VERSIONS = ("3.10", "3.11", "3.12", "3.13")

# Shapes a participant's `predict` takes, each telling its Python apart on its own.
TELLING = {
    "imports_inside": """
def predict(live_features):
    import pandas
    ranked = live_features["feature_0000"].rank(pct=True)
    return pandas.DataFrame({"prediction": ranked}, index=live_features.index)
""",
    "closes_over_a_module": """
import math
def predict(live_features):
    return live_features.iloc[:, :1].apply(math.sqrt).rename(columns=str.lower)
""",
    "closure_and_helper": """
def neutralize(frame, proportion):
    return frame - proportion * frame.mean()
def make(proportion):
    def predict(live_features, live_benchmark_models=None):
        return neutralize(live_features[["feature_0000"]], proportion).rank(pct=True)
    return predict
predict = make(0.5)
""",
}
# Three instructions whose bytes are valid 3.11, 3.12 and 3.13 bytecode alike (the same bytes
# on 3.11 and 3.12, so a pickle of it runs on either): only its argument count says 3.10.
UNTELLING = {"identity": "predict = lambda live_features: live_features\n"}


def python_or_skip(version: str) -> list[str]:
    try:
        return find_python(version)
    except RuntimeError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path] | str]:
    """Every source pickled by every installed Python (or why that Python is missing)."""
    folder = tmp_path_factory.mktemp("built")
    found: dict[str, dict[str, Path] | str] = {}
    for version in VERSIONS:
        try:
            python = find_python(version)
        except RuntimeError as exc:
            found[version] = str(exc)
            continue
        found[version] = pickle_many(python, {**TELLING, **UNTELLING}, folder / version)
    return found


def pickles_of(built: dict[str, dict[str, Path] | str], version: str) -> dict[str, Path]:
    paths = built[version]
    if isinstance(paths, str):
        pytest.skip(paths)
    return paths


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("style", sorted(TELLING))
def test_each_python_is_told_from_its_pickles(built, version: str, style: str) -> None:
    assert built_on(pickles_of(built, version)[style]) == int(version.split(".")[1])


@pytest.mark.parametrize(
    ("version", "told"), [("3.10", 10), ("3.11", None), ("3.12", None), ("3.13", None)]
)
def test_a_function_too_small_to_tell_gives_none_unless_its_bytes_say(
    built, version: str, told: int | None
) -> None:
    assert built_on(pickles_of(built, version)["identity"]) == told


def test_a_compressed_pickle_is_read_as_pandas_reads_it(built, tmp_path: Path) -> None:
    plain = pickles_of(built, "3.12")["imports_inside"]
    packed = tmp_path / "model.pkl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert built_on(packed) == 12


def test_pickles_without_code_and_files_that_are_not_pickles_give_none(tmp_path: Path) -> None:
    by_reference = tmp_path / "by_reference.pkl"
    by_reference.write_bytes(cloudpickle.dumps(json.dumps))  # an importable function: no code
    data = tmp_path / "data.pkl"
    data.write_bytes(pickle.dumps({"weights": list(range(100)), "name": "x"}))
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x80\x05not a pickle at all")
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(cloudpickle.dumps(lambda live: live)[:40])
    assert [built_on(path) for path in (by_reference, data, garbage, truncated)] == [None] * 4


OPCODE_TABLE = """
import json, opcode
entries = getattr(opcode, "_inline_cache_entries", None)
table = {}
for name, number in opcode.opmap.items():
    if number < 256 and name != "CACHE" and not name.startswith("INSTRUMENTED"):
        table[number] = entries.get(name, 0) if isinstance(entries, dict) else entries[number]
print(json.dumps(table))
"""


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_the_opcode_tables_are_each_pythons_own(version: str) -> None:
    python = python_or_skip(version)
    output = subprocess.run(
        [*python, "-c", OPCODE_TABLE], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    table = {int(number): caches for number, caches in json.loads(output).items()}
    ranges, caches = OPCODES[int(version.split(".")[1])]
    assert {number for low, high in ranges for number in range(low, high + 1)} == set(table)
    assert caches == {number: count for number, count in table.items() if count}
