"""`make package`: the deployment package, built here the way Flex Consumption runs it.

    python -m devkit.package            # for this interpreter's Python (3.11, 3.12 or 3.13)

The package is the app's code (function_app.py, host.json, requirements.txt,
shared/) and requirements.txt installed from Linux x86_64 wheels into
`.python_packages/lib/site-packages`, where the Functions Python worker looks
for them. Nothing is built on Azure: azure.yaml sets `remoteBuild: false` and
points azd at the unzipped tree (`dist`); the zip beside it has the same files,
for `azd deploy --from-package` and for measuring.

Wheels are chosen for this interpreter's Python version, so run it with the
Python the Function App uses (`make package PYTHON=python3.13`). pip evaluates
environment markers against the machine it runs on (pypa/pip#11010), so the
build refuses any machine but Linux x86_64: elsewhere it would pick macOS
packages (tensorflow instead of tensorflow-cpu, say).

The installed tree is cached under .work/package, keyed on requirements.txt
and the Python version; so is its zip, less what is pruned. A second build
only copies that zip and appends the app's code.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".work" / "package"
# azure.yaml's `dist`: azd zips this folder as it is.
APP_DIR = WORK / "app"
SITE_PACKAGES = ".python_packages/lib/site-packages"
# Everything the app needs at run time; tests/, devkit/ and infra/ never are.
APP_FILES = ("function_app.py", "host.json", "requirements.txt")
APP_PACKAGES = ("shared",)
# Wheels for glibc 2.28 or older: the Functions host's Python images are Debian 11 for 3.11
# (glibc 2.31) and Debian 12 for 3.12 (Azure/azure-functions-docker, host/4/bullseye and
# host/4/bookworm). onnxruntime, pyarrow, xgboost-cpu and h5py ship only manylinux_2_28
# wheels, catboost and TensorFlow only manylinux2014 ones: pip needs every tag named.
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)
# Never used at run time, so never shipped: paths relative to site-packages.
PRUNED_DIRS = (
    # TensorFlow's C++ headers (~50 MB zipped): read only by a compiler building a custom
    # op against tf.sysconfig.get_include(), never by importing TensorFlow or loading a model.
    "tensorflow/include",
    # ONNX's backend conformance suite data (12 MB zipped): read only by
    # onnx.backend.test.loader when a runtime is being tested, never by onnx.load.
    "onnx/backend/test/data",
    # Console-script launchers pip writes with a shebang naming this machine's
    # interpreter: they cannot run on Azure, and the app starts none of them.
    "bin",
    # Data files a normal install puts in the environment's share/ (Jupyter extensions,
    # man pages), outside any module: only Jupyter and man read them.
    "share",
)
# Caches Python rebuilds from the sources (pip is told not to write them; this catches
# any a wheel ships): bytecode for this machine's exact interpreter is no use to Azure's.
PRUNED_NAMES = ("__pycache__",)
PRUNED_SUFFIXES = (".pyc",)


class PackageError(Exception):
    """The package could not be built; the message says what to do."""


@dataclass(frozen=True)
class Package:
    """A built package: where its zip and unzipped tree are, and its measurements."""

    zip_path: Path
    app_dir: Path
    python_version: str
    zip_bytes: int
    unzipped_bytes: int
    files: int

    def summary(self) -> str:
        """The sizes, as `make package` prints them."""
        return (
            f"{self.zip_path.relative_to(REPO)}: Python {self.python_version}, "
            f"{self.zip_bytes / 1e6:,.0f} MB zipped, {self.unzipped_bytes / 1e6:,.0f} MB unzipped, "
            f"{self.files:,} files"
        )


def build() -> Package:
    """Build (or reuse) the package for this interpreter's Python version, under .work/package."""
    _check_machine()
    WORK.mkdir(parents=True, exist_ok=True)
    # One build at a time (a test and azd's hook may both ask): they share the cache and the folder.
    with (WORK / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(WORK)


def _build(work: Path) -> Package:
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    requirements = REPO / "requirements.txt"
    key = _digest(requirements.read_bytes(), python_version.encode(), repr(PLATFORMS).encode())
    site = _installed_tree(work / "cache", requirements, python_version, key)
    rules = _digest(repr((PRUNED_DIRS, PRUNED_NAMES, PRUNED_SUFFIXES)).encode())
    base_zip = _site_packages_zip(site, work / "cache" / f"{site.name}-{rules}.zip")
    app_dir = APP_DIR
    _stage(site, app_dir)
    zip_path = work / "numerai-functions.zip"
    _final_zip(base_zip, zip_path)
    with zipfile.ZipFile(zip_path) as archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
    return Package(
        zip_path,
        app_dir,
        python_version,
        zip_path.stat().st_size,
        sum(info.file_size for info in infos),
        len(infos),
    )


def _check_machine() -> None:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise PackageError(
            f"build the package on Linux x86_64, not {sys.platform} {platform.machine()}: pip evaluates "
            "requirements.txt's markers for the machine it runs on and would choose this machine's "
            "packages (the deploy workflow builds on Linux; so does a Linux container)."
        )


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:12]


def _installed_tree(cache: Path, requirements: Path, python_version: str, key: str) -> Path:
    """requirements.txt installed from Linux wheels, once per key."""
    site = cache / f"site-packages-py{python_version}-{key}"
    if (site / ".complete").exists():
        log.info("reusing %s", site.relative_to(REPO) if site.is_relative_to(REPO) else site)
        return site
    # Each tree is about 2 GB: keep only the current one (and its zip) for this Python.
    for stale in cache.glob(f"site-packages-py{python_version}-*"):
        _remove(stale)
    partial = site.with_name(site.name + ".partial")
    _remove(partial)
    log.info(
        "installing requirements.txt for Python %s from Linux x86_64 wheels (minutes) ...",
        python_version,
    )
    _pip_install(requirements, partial, python_version)
    (partial / ".complete").write_text("")
    partial.rename(site)
    return site


def _pip_install(requirements: Path, target: Path, python_version: str) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
        str(target),
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--no-compile",
        "-r",
        str(requirements),
    ]
    for tag in PLATFORMS:
        command += ["--platform", tag]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise PackageError(f"cannot run {sys.executable}: {exc}") from exc
    if completed.returncode != 0:
        tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-15:])
        raise PackageError(
            f"pip could not install requirements.txt from Linux x86_64 wheels for Python {python_version} "
            f"(no network to PyPI, or a pinned package has no such wheel):\n{tail}"
        )


def _site_packages_zip(site: Path, zip_path: Path) -> Path:
    """The installed tree, less what is pruned, zipped under .python_packages/lib/site-packages, once."""
    if zip_path.exists():
        return zip_path
    log.info("zipping %s (a minute or two) ...", site.name)
    for stale in zip_path.parent.glob(f"{site.name}-*.zip"):
        stale.unlink()
    partial = zip_path.with_name(zip_path.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, name in _site_files(site):
            archive.write(path, name)
    partial.rename(zip_path)
    return zip_path


def _site_files(site: Path) -> Iterator[tuple[Path, str]]:
    """The installed files that are shipped, and their names in the package."""
    for path, name in _tree_files(site, SITE_PACKAGES):
        relative = path.relative_to(site)
        if not any(relative.is_relative_to(pruned) for pruned in PRUNED_DIRS) and _not_cache(
            relative
        ):
            yield path, name


def _not_cache(path: Path) -> bool:
    return not set(path.parts) & set(PRUNED_NAMES) and path.suffix not in PRUNED_SUFFIXES


def _tree_files(root: Path, prefix: str) -> Iterator[tuple[Path, str]]:
    """Every file under `root` (sorted, so that builds are alike) and its name in the package."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != ".complete":
            yield path, f"{prefix}/{path.relative_to(root).as_posix()}"


def app_files() -> Iterator[tuple[Path, str]]:
    """The app's own files and their names in the package."""
    for name in APP_FILES:
        yield REPO / name, name
    for package in APP_PACKAGES:
        for path, name in _tree_files(REPO / package, package):
            if _not_cache(path):
                yield path, name


def _stage(site: Path, app_dir: Path) -> None:
    """The unzipped package for azd: the app's files copied, site-packages hard-linked from the cache."""
    _remove(app_dir)
    for path, name in app_files():
        (app_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, app_dir / name)
    for path, name in _site_files(site):
        target = app_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:  # another file system: copy instead
            shutil.copy2(path, target)


def _final_zip(base_zip: Path, zip_path: Path) -> None:
    partial = zip_path.with_name(zip_path.name + ".partial")
    shutil.copyfile(base_zip, partial)
    with zipfile.ZipFile(partial, "a", zipfile.ZIP_DEFLATED) as archive:
        for path, name in app_files():
            archive.write(path, name)
    partial.replace(zip_path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    """Build the package and print its sizes."""
    argparse.ArgumentParser(
        prog="python -m devkit.package", description=__doc__.split("\n\n")[0]
    ).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        package = build()
    except PackageError as exc:
        log.error("make package: %s", exc)
        return 1
    print(package.summary())
    print(
        f"azd deploys {package.app_dir.relative_to(REPO)} (azure.yaml's dist); the zip holds the same files"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
