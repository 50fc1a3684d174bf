"""The deployment package runs the app on its own: unzipped into an empty, read-only folder,
in an interpreter that sees only that folder, its .python_packages and the standard library,
from the bytecode it ships; a profile without some formats runs the rest and names what
it left out.

`make package` builds it (devkit/package.py); the installed wheels are cached in
.work/package, so only the first build of each profile downloads and installs them.
The build's choices (profiles, the container command, the refusal) are checked first, in
milliseconds.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import platform
import shutil
import stat
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from devkit import package as packaging
from devkit.package import (
    ALL_FORMATS,
    FORMAT_PACKAGES,
    SITE_PACKAGES,
    Package,
    PackageError,
    build,
    container_command,
    parse_formats,
    profile_requirements,
)
from devkit.synthetic import SyntheticRound
from shared.formats import FORMAT_LIBRARIES
from shared.manifest import ModelFormat

REPO = Path(__file__).resolve().parent.parent
# The profile the README measures: no TensorFlow, no CatBoost.
SLIM = ("lightgbm", "onnx", "numerai_pickle", "sklearn", "xgboost")
# What the left-out formats' models fail with, each alone.
LEFT_OUT = {
    "keras": "this deployment was built without TensorFlow: add keras to PACKAGE_FORMATS and deploy again",
    "catboost": "this deployment was built without CatBoost: add catboost to PACKAGE_FORMATS and deploy again",
}
# Pruned from site-packages, each proven unneeded by the formats' runs below.
PRUNED = (
    "clang/",
    "matplotlib/",
    "plotly/",
    "PIL/",
    "fontTools/",
    "pandas/tests/",
    "scipy/stats/tests/",
)
# The flags word of a pyc compiled with --invalidation-mode unchecked-hash (PEP 552).
UNCHECKED_HASH = 0b01


# --- The build's choices, without building -------------------------------------------------


def test_every_format_has_its_packages_and_its_library() -> None:
    assert ALL_FORMATS == tuple(f.value for f in ModelFormat)
    assert set(FORMAT_PACKAGES) == set(FORMAT_LIBRARIES) == set(ALL_FORMATS)
    named = {
        packaging._normalized(line.split("==")[0].strip())
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    }
    assert {p for packages in FORMAT_PACKAGES.values() for p in packages} - named == set()


def test_a_profile_without_keras_and_catboost_drops_tensorflow_keras_and_catboost_only() -> None:
    text = (REPO / "requirements.txt").read_text()
    assert profile_requirements(text, ALL_FORMATS) == text
    slim = profile_requirements(text, parse_formats(",".join(SLIM)))
    dropped = [line for line in text.splitlines() if line not in slim.splitlines()]
    assert dropped and all(
        line.split("==")[0] in ("catboost", "keras", "tensorflow", "tensorflow-cpu")
        for line in dropped
    )
    assert {line.split("==")[0] for line in dropped} >= {"catboost", "keras", "tensorflow-cpu"}


@pytest.mark.parametrize("value", ["", "all", " all "])
def test_no_profile_is_every_format(value: str) -> None:
    assert parse_formats(value) == ALL_FORMATS


def test_a_profile_naming_no_format_is_refused_with_the_list() -> None:
    with pytest.raises(
        PackageError, match="PACKAGE_FORMATS names tensorflow, which is no model format"
    ):
        parse_formats("lightgbm,tensorflow")


def test_the_container_build_runs_the_same_build_in_a_linux_amd64_python_image() -> None:
    command = container_command("docker", "3.12", ("lightgbm", "onnx"), Path("/repo"), (501, 20))
    assert command == [
        "docker", "run", "--rm", "--platform", "linux/amd64",
        "--user", "501:20", "--env", "HOME=/tmp",
        "--volume", "/repo:/src", "--workdir", "/src",
        "--env", "PACKAGE_FORMATS=lightgbm,onnx",
        "python:3.12-slim", "python", "-m", "devkit.package", "--python", "3.12",
    ]  # fmt: skip
    assert container_command("podman", "3.11", ALL_FORMATS, Path("/repo"))[:5] == [
        "podman", "run", "--rm", "--platform", "linux/amd64",
    ]  # fmt: skip


@pytest.mark.parametrize(("system", "machine"), [("darwin", "arm64"), ("linux", "aarch64")])
def test_elsewhere_without_docker_or_podman_the_build_is_refused_with_the_ways_that_work(
    system: str, machine: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(packaging.sys, "platform", system)
    monkeypatch.setattr(packaging.platform, "machine", lambda: machine)
    monkeypatch.setenv("PATH", "")  # no docker, no podman
    with caplog.at_level(logging.ERROR):
        assert packaging.main([]) == 1
    message = caplog.text
    assert f"this is {system} {machine}" in message
    assert "Docker or Podman" in message and "linux/amd64" in message
    assert "GitHub workflow" in message and "WSL" in message
    with pytest.raises(PackageError, match="built on Linux x86_64"):
        build()


def test_elsewhere_with_docker_the_build_runs_in_the_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a Mac with Docker, `python -m devkit.package` runs the container command (a stand-in
    docker here, recording its arguments: this machine runs no Docker engine)."""
    record = tmp_path / "docker-args"
    docker = tmp_path / "bin" / "docker"
    docker.parent.mkdir()
    docker.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    docker.chmod(0o755)
    monkeypatch.setattr(packaging.sys, "platform", "darwin")
    monkeypatch.setattr(packaging.platform, "machine", lambda: "arm64")
    monkeypatch.setenv("PATH", f"{docker.parent}:/usr/bin:/bin")
    assert packaging.main(["--python", "3.12", "--formats", "onnx,lightgbm"]) == 0
    expected = container_command("docker", "3.12", ("lightgbm", "onnx"), REPO)
    assert record.read_text().splitlines() == expected[1:]


def test_another_python_without_its_interpreter_or_a_container_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    with caplog.at_level(logging.ERROR):
        assert packaging.main(["--python", "3.10"]) == 1
    assert "neither python3.10 nor Docker or Podman is installed here" in caplog.text


# --- The package itself (slow: builds, downloads once) ---------------------------------------

# What the Functions worker does with an unzipped package, and then one run of
# `python -m shared predict`: prints the functions, the import path and every
# module file the interpreter loaded, as one JSON line.
RUN_FROM_PACKAGE = textwrap.dedent("""
    import json, sys
    root, data, manifest, out = sys.argv[1:5]
    sys.path[:0] = [root, root + "/.python_packages/lib/site-packages"]
    import function_app
    functions = {f.get_function_name(): f.get_bindings_dict()["bindings"][0]["type"]
                 for f in function_app.app.get_functions()}
    from shared.cli import main
    code = main(["predict", "--data", data, "--manifest", manifest, "--out", out])
    files = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
    print(json.dumps({"functions": functions, "exit": code, "path": sys.path, "files": files}))
""")


@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="the package holds Linux x86_64 wheels: it is built and run only there",
)
# On a clean clone both profiles are downloaded, installed and compiled while the other
# tests run beside it: measured here at more than the suite's 600 s per test (it timed out
# compiling the first profile), about 4.5 minutes with both cached.
@pytest.mark.timeout(2400)
def test_the_unzipped_package_indexes_every_function_and_runs_every_format_alone(
    small_round: SyntheticRound,
    all_formats: Path,
    tmp_path: Path,
) -> None:
    # One test, not several: a second build in another xdist worker would restage the folder under the first.
    for formats in (ALL_FORMATS, SLIM):
        try:
            package = build(formats)
        except PackageError as exc:
            pytest.fail(f"make package failed, so the deployment package cannot be checked: {exc}")
        _check_contents(package)
        assert json.loads((package.app_dir.parent / "built.json").read_text()) == {
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "formats": list(formats),
        }
        work = tmp_path / "-".join(formats)
        root = work / "wwwroot"
        try:
            _run_unzipped(package, root, small_round, all_formats, work)
        finally:
            _writable(root)
            shutil.rmtree(root, ignore_errors=True)  # 2 GB: pytest keeps the last runs' tmp_path


def _run_unzipped(
    package: Package, root: Path, small_round: SyntheticRound, all_formats: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(package.zip_path) as archive:
        archive.extractall(root)
    # Flex runs the app from the mounted package, read-only: nothing can write bytecode there.
    _read_only(root)
    models = tmp_path / "models"
    shutil.copytree(all_formats, models)
    manifest = json.loads((models / "models.json").read_text())
    probe_record = tmp_path / "worker-imports.json"
    (models / "probe.pkl").write_bytes(cloudpickle.dumps(_probe(str(probe_record))))
    manifest["models"].append(
        {"name": "probe", "file": "probe.pkl", "format": "numerai_pickle", "trust_pickle": True}
    )
    (models / "models.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"

    interpreter = (
        sys._base_executable
    )  # not the project's venv: -I -S leaves it only the standard library
    completed = subprocess.run(
        [
            interpreter,
            "-I",
            "-S",
            "-B",
            "-c",
            RUN_FROM_PACKAGE,
            str(root),
            str(small_round.directory),
            str(models / "models.json"),
            str(out),
        ],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])

    assert result["functions"] == {
        "scheduled_submission": "timerTrigger",
        "test_run": "httpTrigger",
        "model_task": "queueTrigger",
        "poison_task": "queueTrigger",
        "runs": "httpTrigger",
        "run": "httpTrigger",
        "report": "httpTrigger",
        "numerai_webhook": "httpTrigger",
    }
    summary = json.loads((out / "summary.json").read_text())
    left_out = {
        entry["name"]: f"model '{entry['name']}': {LEFT_OUT[entry['format']]}"
        for entry in manifest["models"]
        if entry["format"] not in package.formats
    }
    assert {m["name"]: m["error"] for m in summary["models"] if not m["ok"]} == left_out
    assert {entry["format"] for entry in manifest["models"]} == {
        "keras",
        "lightgbm",
        "onnx",
        "numerai_pickle",
        "sklearn",
        "xgboost",
        "catboost",
    }
    assert all(m["rows"] == len(small_round.ids) for m in summary["models"] if m["ok"])
    assert result["exit"] == (1 if left_out else 0)
    # Nothing came from outside the folder: not in the run's process, not in a model's worker.
    inside = _inside(root)
    assert [p for p in result["path"] if not inside(p)] == []
    assert [f for f in result["files"] if not inside(f)] == []
    worker = json.loads(probe_record.read_text())
    # `python -m shared.worker` puts its working folder (the run's, under out/) first.
    assert [p for p in worker["path"] if not inside(p) and not Path(p).is_relative_to(out)] == []
    assert [f for f in worker["files"] if not inside(f)] == []
    assert any(f.startswith(str(root / SITE_PACKAGES / "pandas")) for f in worker["files"])
    # Every module the app and the worker imported came with its bytecode, which Python
    # loads without comparing it to the source.
    loaded = {f for f in result["files"] + worker["files"] if f.endswith(".py")}
    packaged = sorted(f for f in loaded if Path(f).is_relative_to(root))
    assert len(packaged) > 500
    assert [f for f in packaged if _pyc_flags(f) != UNCHECKED_HASH] == []


def _check_contents(package: Package) -> None:
    """The app and its wheels with their bytecode, without tests, devkit or what is pruned; azd's folder alike."""
    with zipfile.ZipFile(package.zip_path) as archive:
        names = archive.namelist()
    tag = sys.implementation.cache_tag
    assert {name.split("/", 1)[0] for name in names} == {
        "function_app.py",
        "__pycache__",  # function_app's bytecode
        "host.json",
        "requirements.txt",
        "shared",
        ".python_packages",
    }
    assert (f"{SITE_PACKAGES}/tensorflow/__init__.py" in names) == ("keras" in package.formats)
    assert (f"{SITE_PACKAGES}/catboost/__init__.py" in names) == ("catboost" in package.formats)
    assert [n for n in names if n.startswith(f"{SITE_PACKAGES}/tensorflow/include/")] == []
    assert [n for n in names if n.startswith(tuple(f"{SITE_PACKAGES}/{p}" for p in PRUNED))] == []
    # Every library's tests are pruned but numpy's, which numpy.testing imports (KEPT_TESTS).
    assert [
        n for n in names if "/tests/" in n and not n.startswith(f"{SITE_PACKAGES}/numpy/")
    ] == []
    assert any(n.startswith(f"{SITE_PACKAGES}/numpy/_core/tests/") for n in names)
    # The app's own modules and pandas' come with this Python's bytecode.
    for module in ("function_app.py", "shared/cli.py", f"{SITE_PACKAGES}/pandas/__init__.py"):
        folder, name = module.rpartition("/")[::2]
        pyc = f"{folder}/__pycache__/{name[:-3]}.{tag}.pyc".lstrip("/")
        assert module in names and pyc in names
    staged = sorted(
        p.relative_to(package.app_dir).as_posix() for p in package.app_dir.rglob("*") if p.is_file()
    )
    assert staged == sorted(names)


def _pyc_flags(source: str) -> int | None:
    """The flags word of a module's pyc (PEP 552), or None when it has none."""
    pyc = Path(importlib.util.cache_from_source(source))
    if not pyc.is_file():
        return None
    return int.from_bytes(pyc.read_bytes()[4:8], "little")


def _read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _writable(root: Path) -> None:
    for path in [root, *root.rglob("*")] if root.exists() else []:
        if path.is_dir():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def _inside(root: Path) -> Callable[[str], bool]:
    """Whether a path is the package's or the standard library's (never another site-packages)."""
    stdlib = (
        Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    zipped = stdlib.with_name(f"python{sys.version_info.major}{sys.version_info.minor}.zip")

    def inside(path: str) -> bool:
        resolved = Path(path)
        if resolved.is_relative_to(root):
            return True
        return resolved == zipped or (
            resolved.is_relative_to(stdlib)
            and not resolved.is_relative_to(stdlib / "site-packages")
        )

    return inside


def _probe(record: str) -> Callable[..., Any]:
    """An upload pickle that predicts and records its worker's import path and loaded module files."""

    # Nested, so cloudpickle stores it by value: the package has no tests/.
    def predict(live_features, live_benchmark_models=None):
        import json
        import sys

        files = sorted(
            {m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
        )
        with open(record, "w") as handle:
            json.dump({"path": sys.path, "files": files}, handle)
        ranked = live_features.filter(like="feature_").iloc[:, 0].rank(pct=True, method="first")
        return ranked.to_frame("prediction")

    return predict
