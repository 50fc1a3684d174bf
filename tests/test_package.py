"""The deployment package runs the app on its own: unzipped into an empty folder, in an
interpreter that sees only that folder, its .python_packages and the standard library.

`make package` builds it (devkit/package.py); the installed wheels are cached in
.work/package, so only the first build downloads and installs them.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from devkit.package import SITE_PACKAGES, Package, PackageError, build
from devkit.synthetic import SyntheticRound

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
def test_the_unzipped_package_indexes_every_function_and_runs_every_format_alone(
    small_round: SyntheticRound,
    all_formats: Path,
    tmp_path: Path,
) -> None:
    # One test, not several: a second build in another xdist worker would restage the folder under the first.
    try:
        package = build()
    except PackageError as exc:
        pytest.fail(f"make package failed, so the deployment package cannot be checked: {exc}")
    _check_contents(package)

    root = tmp_path / "wwwroot"
    try:
        _run_unzipped(package, root, small_round, all_formats, tmp_path)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # 2 GB: pytest keeps the last runs' tmp_path


def _run_unzipped(
    package: Package, root: Path, small_round: SyntheticRound, all_formats: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(package.zip_path) as archive:
        archive.extractall(root)
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
    assert {m["name"]: m["error"] for m in summary["models"] if not m["ok"]} == {}
    assert {entry["format"] for entry in manifest["models"]} == {
        "keras",
        "lightgbm",
        "onnx",
        "numerai_pickle",
        "sklearn",
        "xgboost",
        "catboost",
    }
    assert all(m["rows"] == len(small_round.ids) for m in summary["models"])
    assert result["exit"] == 0
    # Nothing came from outside the folder: not in the run's process, not in a model's worker.
    inside = _inside(root)
    assert [p for p in result["path"] if not inside(p)] == []
    assert [f for f in result["files"] if not inside(f)] == []
    worker = json.loads(probe_record.read_text())
    # `python -m shared.worker` puts its working folder (the run's, under out/) first.
    assert [p for p in worker["path"] if not inside(p) and not Path(p).is_relative_to(out)] == []
    assert [f for f in worker["files"] if not inside(f)] == []
    assert any(f.startswith(str(root / SITE_PACKAGES / "pandas")) for f in worker["files"])


def _check_contents(package: Package) -> None:
    """The app and its wheels, without tests, devkit, caches or TensorFlow's headers; azd's folder alike."""
    with zipfile.ZipFile(package.zip_path) as archive:
        names = archive.namelist()
    assert {name.split("/", 1)[0] for name in names} == {
        "function_app.py",
        "host.json",
        "requirements.txt",
        "shared",
        ".python_packages",
    }
    assert f"{SITE_PACKAGES}/tensorflow/__init__.py" in names
    assert [n for n in names if "__pycache__" in n or n.endswith(".pyc")] == []
    assert [n for n in names if n.startswith(f"{SITE_PACKAGES}/tensorflow/include/")] == []
    staged = sorted(
        p.relative_to(package.app_dir).as_posix() for p in package.app_dir.rglob("*") if p.is_file()
    )
    assert staged == sorted(names)


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
