"""Numerai upload pickles made by another Python, the way a participant's machine makes them.

A cloudpickled function defined in `__main__` is stored by value, with its code
object, and code objects differ between Python versions: that is what makes a
pickle from Python 3.12 crash or fail on 3.11. `pickle_with` runs another
interpreter to define and dump a function from source text. That interpreter
needs nothing installed: cloudpickle is pure Python and is lent to it from this
environment; the function imports pandas only when it is called.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cloudpickle

# Where pyenv keeps other Pythons on these machines (and on many developers' ones).
PYENV_VERSIONS = {"3.10": "3.10.13", "3.11": "3.11.7", "3.12": "3.12.1", "3.13": "3.13.0"}


def find_python(version: str) -> list[str]:
    """A command that starts Python `version` ("3.12"): this interpreter, `pythonX.Y`, or pyenv's."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return [sys.executable]
    candidates = [
        ["env", f"PYENV_VERSION={PYENV_VERSIONS.get(version, version)}", f"python{version}"],
        [f"python{version}"],
    ]
    for command in candidates:
        try:
            completed = subprocess.run(
                [*command, "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if completed.returncode == 0 and completed.stdout.strip() == str(
            tuple(map(int, version.split(".")))
        ):
            return command
    raise RuntimeError(
        f"Python {version} is not installed (tried python{version} and pyenv's {version})"
    )


def pickle_with(python: list[str], source: str, out: Path) -> Path:
    """Define `predict` from `source` in `python`'s `__main__` and cloudpickle it to `out`."""
    return pickle_many(python, {out.stem: source}, out.parent)[out.stem]


def pickle_many(python: list[str], sources: dict[str, str], folder: Path) -> dict[str, Path]:
    """`pickle_with` for several sources in one run of `python`: `folder/<name>.pkl` each.

    Each source runs in a namespace of its own named `__main__`, so cloudpickle
    stores its `predict` by value, as it does a notebook's.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.pkl" for name in sources}
    jobs = json.dumps({str(paths[name]): source for name, source in sources.items()})
    with tempfile.TemporaryDirectory() as lent:
        shutil.copytree(Path(cloudpickle.__file__).parent, Path(lent) / "cloudpickle")
        (Path(lent) / "jobs.json").write_text(jobs)
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", ""),
            "PYTHONPATH": lent,
        }
        completed = subprocess.run(
            [*python, "-c", _BUILD, str(Path(lent) / "jobs.json")],
            check=False,
            env=environment,
            timeout=120,
            capture_output=True,
            text=True,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(python)} could not build the pickles: {completed.stderr}")
    return paths


_BUILD = """
import json, sys
import cloudpickle
for out, source in json.load(open(sys.argv[1])).items():
    namespace = {"__name__": "__main__"}
    exec(compile(source, "<notebook>", "exec"), namespace)
    open(out, "wb").write(cloudpickle.dumps(namespace["predict"]))
"""
