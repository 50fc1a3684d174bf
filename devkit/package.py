"""`make package`: the deployment package, built here the way Flex Consumption runs it.

    python -m devkit.package                      # for this interpreter's Python (3.11, 3.12 or 3.13)
    python -m devkit.package --python 3.12        # for another: its pythonX.Y, or a container
    PACKAGE_FORMATS=lightgbm,onnx,sklearn,xgboost,numerai_pickle python -m devkit.package

The package is the app's code (function_app.py, host.json, requirements.txt,
shared/) and requirements.txt installed from Linux x86_64 wheels into
`.python_packages/lib/site-packages`, where the Functions Python worker looks
for them. Nothing is built on Azure: azure.yaml sets `remoteBuild: false` and
points azd at the unzipped tree (`dist`); the zip beside it has the same files,
for `azd deploy --from-package` and for measuring.

Wheels are chosen for the target Python (`--python`, by default this
interpreter's), and the tree is compiled to bytecode by that Python, so the
build runs in it: another Python's `pythonX.Y` is run for it. pip evaluates
environment markers against the machine it runs on (pypa/pip#11010), so the
build runs only on Linux x86_64: elsewhere (macOS, ARM) it runs in a Linux
x86_64 container of the official python:X.Y image when Docker or Podman is
installed, and is refused otherwise.

A profile (`--formats`, or PACKAGE_FORMATS; default every format) leaves out
the packages of the model formats the deployment does not carry (FORMAT_PACKAGES).

The installed tree is cached under .work/package, keyed on the profile's
requirements and the Python version; so is its zip, less what is pruned. A
second build only copies that zip and appends the app's code. What was built
is recorded in .work/package/built.json, outside the deployed folder, for
azd's predeploy hook (infra/hooks/package_python.py).
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".work" / "package"
# azure.yaml's `dist`: azd zips this folder as it is.
APP_DIR = WORK / "app"
# What was built (Python, formats), beside the deployed folder rather than in it.
RECORD = WORK / "built.json"
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
# The requirements.txt packages (pip's names) only a model format needs: a profile without
# the format leaves them out. Everything else (pandas, pyarrow, numpy, scipy, joblib, the
# app's own clients) every deployment carries. Keras runs on TensorFlow.
FORMAT_PACKAGES: dict[str, tuple[str, ...]] = {
    "keras": ("keras", "tensorflow", "tensorflow-cpu"),
    "catboost": ("catboost",),
    "lightgbm": ("lightgbm",),
    "xgboost": ("xgboost", "xgboost-cpu"),
    "onnx": ("onnx", "onnxruntime"),
    "sklearn": ("scikit-learn",),
    # Upload pickles may use anything Numerai's runner has; polars only they use.
    "numerai_pickle": ("cloudpickle", "polars"),
}
# shared.manifest.ModelFormat's values (tests check), named here because the build runs on
# a bare Python (azd's hook, a python container) that has none of the app's packages.
ALL_FORMATS = ("keras", "lightgbm", "onnx", "numerai_pickle", "sklearn", "xgboost", "catboost")
# The Linux x86_64 image a build elsewhere runs in; the official image has pip.
CONTAINER_ENGINES = ("docker", "podman")
CONTAINER_IMAGE = "python:{version}-slim"
CONTAINER_REPO = "/src"
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
    # libclang (25 MB zipped): a TensorFlow dependency for generating its Python bindings
    # when TensorFlow is built; importing TensorFlow and running Keras never load it.
    "clang",
    # matplotlib and what only it needs (25 MB zipped), and plotly (8 MB): CatBoost's
    # dependencies for its plotting methods, which import them when called; loading and
    # predicting never do. Numerai's runner has them, so the README lists the difference.
    "matplotlib",
    "mpl_toolkits",
    "fontTools",
    "PIL",
    "pillow.libs",
    "kiwisolver",
    "contourpy",
    "plotly",
    "_plotly_utils",
)
# Each library's own test suite (11 MB zipped, 46 MB unzipped): run by its developers,
# never imported by the library. tests/test_package.py runs every format without them.
PRUNED_NAMES = ("tests",)
# Except where a library imports its own tests' modules: numpy 2.2's numpy.testing (which
# scikit-learn, CatBoost and joblib pickles reach) imports numpy._core.tests._natype, seen
# failing on Python 3.13's lock ("No module named 'numpy._core.tests'").
KEPT_TESTS = ("numpy",)
# Compiled bytecode is shipped: Flex runs the app from the read-only package, so without it
# every new instance compiles pandas, TensorFlow and scipy again. It is compiled by the
# target Python (its minor version's format) with unchecked hashes: the timestamps that a
# zip does not keep exactly are never compared.
INVALIDATION_MODE = "unchecked-hash"


class PackageError(Exception):
    """The package could not be built; the message says what to do."""


@dataclass(frozen=True)
class Package:
    """A built package: where its zip and unzipped tree are, and its measurements."""

    zip_path: Path
    app_dir: Path
    python_version: str
    formats: tuple[str, ...]
    zip_bytes: int
    unzipped_bytes: int
    files: int

    def summary(self) -> str:
        """The sizes, as `make package` prints them."""
        return (
            f"{self.zip_path.relative_to(REPO)}: Python {self.python_version}, "
            f"{profile_name(self.formats)}, "
            f"{self.zip_bytes / 1e6:,.0f} MB zipped, {self.unzipped_bytes / 1e6:,.0f} MB unzipped, "
            f"{self.files:,} files"
        )


def build(formats: Iterable[str] = ALL_FORMATS, work: Path = WORK) -> Package:
    """Build (or reuse) the package for this interpreter's Python and `formats`, under `work`.

    Runs only on Linux x86_64 (main() takes a build elsewhere into a container).
    """
    profile = parse_formats(",".join(formats))
    if not on_linux_x86_64(sys.platform, platform.machine()):
        raise PackageError(refusal(sys.platform, platform.machine()))
    work.mkdir(parents=True, exist_ok=True)
    # One build at a time (a test and azd's hook may both ask): they share the cache and the folder.
    with (work / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(work, profile)


def parse_formats(text: str) -> tuple[str, ...]:
    """The formats of a PACKAGE_FORMATS value ("" or "all": every one), in the manifest's order."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    if not names or names == {"all"}:
        return ALL_FORMATS
    unknown = sorted(names - set(ALL_FORMATS))
    if unknown:
        raise PackageError(
            f"PACKAGE_FORMATS names {', '.join(unknown)}, which is no model format: use a "
            f"comma-separated list of {', '.join(ALL_FORMATS)} (or leave it unset for all)"
        )
    return tuple(f for f in ALL_FORMATS if f in names)


def profile_name(formats: tuple[str, ...]) -> str:
    """How a profile is named in summaries: "all formats", or "without keras, …"."""
    left_out = [f for f in ALL_FORMATS if f not in formats]
    return "all formats" if not left_out else "without " + ", ".join(left_out)


def profile_requirements(text: str, formats: tuple[str, ...]) -> str:
    """requirements.txt less the lines of packages only the formats left out need."""
    dropped = {
        package
        for fmt, packages in FORMAT_PACKAGES.items()
        if fmt not in formats
        for package in packages
    }
    kept = []
    for line in text.splitlines():
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#", 1)[0])
        if name is None or _normalized(name.group(1)) not in dropped:
            kept.append(line)
    return "\n".join(kept) + "\n"


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _build(work: Path, formats: tuple[str, ...]) -> Package:
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    requirements = profile_requirements((REPO / "requirements.txt").read_text(), formats)
    key = _digest(
        requirements.encode(),
        python_version.encode(),
        repr(PLATFORMS).encode(),
        INVALIDATION_MODE.encode(),
    )
    tag = "all" if formats == ALL_FORMATS else _digest(",".join(formats).encode())[:6]
    site = _installed_tree(work / "cache", requirements, f"py{python_version}-{tag}", key)
    rules = _digest(repr((PRUNED_DIRS, PRUNED_NAMES, KEPT_TESTS)).encode())
    base_zip = _site_packages_zip(site, work / "cache" / f"{site.name}-{rules}.zip")
    app_dir = work / APP_DIR.name
    _remove(work / RECORD.name)  # stale until this build is whole
    _stage(site, app_dir)
    zip_path = work / "numerai-functions.zip"
    _final_zip(base_zip, zip_path, app_dir)
    with zipfile.ZipFile(zip_path) as archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
    (work / RECORD.name).write_text(
        json.dumps({"python": python_version, "formats": list(formats)}) + "\n"
    )
    return Package(
        zip_path,
        app_dir,
        python_version,
        formats,
        zip_path.stat().st_size,
        sum(info.file_size for info in infos),
        len(infos),
    )


def on_linux_x86_64(system: str, machine: str) -> bool:
    """Whether pip here picks the Function App's wheels (Linux x86_64)."""
    return system == "linux" and machine == "x86_64"


def refusal(system: str, machine: str) -> str:
    """Why the package cannot be built on this machine, and the two ways that work."""
    return (
        f"the package is built on Linux x86_64, and this is {system} {machine}: pip evaluates "
        "requirements.txt's markers for the machine it runs on and would choose this machine's "
        "packages. Either install Docker or Podman (the build then runs in a linux/amd64 "
        "python container; on Apple silicon through its emulation), or deploy from the GitHub "
        "workflow (.github/workflows/deploy.yml), or run azd from Linux or WSL on Windows."
    )


def container_command(
    engine: str,
    python_version: str,
    formats: tuple[str, ...],
    repo: Path = REPO,
    user: tuple[int, int] | None = None,
) -> list[str]:
    """The docker/podman command that builds the package in a Linux x86_64 python:X.Y container.

    The repository is mounted at /src and the same `python -m devkit.package` runs inside, so
    the cache and the package land in this checkout's .work/package. `user` (uid, gid) keeps
    the files this user's on Linux hosts, whose engines do not map ownership.
    """
    command = [engine, "run", "--rm", "--platform", "linux/amd64"]
    if user is not None:
        command += ["--user", f"{user[0]}:{user[1]}", "--env", "HOME=/tmp"]
    return command + [
        "--volume",
        f"{repo}:{CONTAINER_REPO}",
        "--workdir",
        CONTAINER_REPO,
        "--env",
        f"PACKAGE_FORMATS={','.join(formats)}",
        CONTAINER_IMAGE.format(version=python_version),
        "python",
        "-m",
        "devkit.package",
        "--python",
        python_version,
    ]


def find_python(version: str) -> str | None:
    """An interpreter of `version` on this machine: pythonX.Y on PATH, or pyenv's; None if none.

    A pyenv shim for a version pyenv has not selected fails when run, so each is tried.
    """
    candidates = [shutil.which(f"python{version}")]
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    for candidate in filter(None, candidates):
        completed = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode == 0 and completed.stdout.strip() == version:
            return candidate
    return None


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:12]


def _installed_tree(cache: Path, requirements: str, name: str, key: str) -> Path:
    """The profile's requirements installed from Linux wheels and compiled, once per key."""
    site = cache / f"site-packages-{name}-{key}"
    if (site / ".complete").exists():
        log.info("reusing %s", site.relative_to(REPO) if site.is_relative_to(REPO) else site)
        return site
    # Each tree is up to 2 GB: keep only the current one (and its zip) per Python and profile.
    for stale in cache.glob(f"site-packages-{name}-*"):
        _remove(stale)
    partial = site.with_name(site.name + ".partial")
    _remove(partial)
    partial.mkdir(parents=True)
    requirements_file = cache / f"requirements-{name}-{key}.txt"
    requirements_file.write_text(requirements)
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    log.info(
        "installing %s for Python %s from Linux x86_64 wheels (minutes) ...",
        requirements_file.name,
        python_version,
    )
    _pip_install(requirements_file, partial, python_version)
    log.info("compiling it to bytecode (a minute or two) ...")
    _compile(partial)
    requirements_file.unlink()
    (partial / ".complete").write_text("")
    partial.rename(site)
    return site


def _compile(tree: Path) -> None:
    """Bytecode for every module, by this (the target) Python, in unchecked-hash pycs."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            INVALIDATION_MODE,
            str(tree),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    # A few libraries ship templates or test data named .py that are not Python (or not
    # this version's): compileall reports them and compiles the rest; they are never imported.
    if completed.returncode != 0:
        failed = re.findall(r"\*\*\* Error compiling '([^']+)'", completed.stdout)
        log.info(
            "not compiled (not importable Python): %s", ", ".join(failed) or completed.stdout[-500:]
        )


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
            f"pip could not install {requirements.name} from Linux x86_64 wheels for Python {python_version} "
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
        pruned_name = set(relative.parts[:-1]) & set(PRUNED_NAMES)
        if relative.parts[0] in KEPT_TESTS:
            pruned_name = set()
        if not any(relative.is_relative_to(pruned) for pruned in PRUNED_DIRS) and not pruned_name:
            yield path, name


def _tree_files(root: Path, prefix: str) -> Iterator[tuple[Path, str]]:
    """Every file under `root` (sorted, so that builds are alike) and its name in the package."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != ".complete":
            yield path, f"{prefix}/{path.relative_to(root).as_posix()}"


def app_files() -> Iterator[tuple[Path, str]]:
    """The app's own files and their names in the package (the checkout's bytecode caches left out)."""
    for name in APP_FILES:
        yield REPO / name, name
    for package in APP_PACKAGES:
        for path, name in _tree_files(REPO / package, package):
            if "__pycache__" not in path.parts:
                yield path, name


def _stage(site: Path, app_dir: Path) -> None:
    """The unzipped package for azd: the app's files copied and compiled, site-packages hard-linked."""
    _remove(app_dir)
    for path, name in app_files():
        (app_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, app_dir / name)
    _compile(app_dir)
    for path, name in _site_files(site):
        target = app_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:  # another file system: copy instead
            shutil.copy2(path, target)


def _final_zip(base_zip: Path, zip_path: Path, app_dir: Path) -> None:
    """The cached site-packages zip with the staged app's files (and their bytecode) appended."""
    partial = zip_path.with_name(zip_path.name + ".partial")
    shutil.copyfile(base_zip, partial)
    with zipfile.ZipFile(partial, "a", zipfile.ZIP_DEFLATED) as archive:
        for _, name in app_files():
            archive.write(app_dir / name, name)
        for folder in (app_dir, *(app_dir / package for package in APP_PACKAGES)):
            pattern = "__pycache__/*.pyc" if folder == app_dir else "**/__pycache__/*.pyc"
            for path in sorted(folder.glob(pattern)):
                archive.write(path, path.relative_to(app_dir).as_posix())
    partial.replace(zip_path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    """Build the package (here, in the target Python or in a container) and print its sizes."""
    parser = argparse.ArgumentParser(
        prog="python -m devkit.package", description=__doc__.split("\n\n")[0]
    )
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    parser.add_argument("--python", default=here, help="the Function App's Python (X.Y)")
    parser.add_argument(
        "--formats",
        default=os.environ.get("PACKAGE_FORMATS", ""),
        help="comma-separated model formats to carry (default: PACKAGE_FORMATS, or all)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        formats = parse_formats(args.formats)
        if not on_linux_x86_64(sys.platform, platform.machine()):
            return _run(_in_container(args.python, formats))
        if args.python != here:
            python = find_python(args.python)
            if python is None:
                engine = _container_engine()
                if engine is None:
                    raise PackageError(
                        f"the package is for Python {args.python}, and neither python{args.python} "
                        "nor Docker or Podman is installed here: install one of them"
                    )
                return _run(_in_container(args.python, formats))
            return _run([python, "-m", "devkit.package", "--formats", ",".join(formats)])
        package = build(formats)
    except PackageError as exc:
        log.error("make package: %s", exc)
        return 1
    print(package.summary())
    print(
        f"azd deploys {package.app_dir.relative_to(REPO)} (azure.yaml's dist); the zip holds the same files"
    )
    return 0


def _container_engine() -> str | None:
    return next((engine for engine in CONTAINER_ENGINES if shutil.which(engine)), None)


def _in_container(python_version: str, formats: tuple[str, ...]) -> list[str]:
    """The container build's command line, or PackageError with the ways that work."""
    engine = _container_engine()
    if engine is None:
        raise PackageError(refusal(sys.platform, platform.machine()))
    user = (os.getuid(), os.getgid()) if sys.platform == "linux" else None
    return container_command(engine, python_version, formats, REPO, user)


def _run(command: list[str]) -> int:
    log.info("running %s", " ".join(command))
    return subprocess.run(command, cwd=REPO, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
