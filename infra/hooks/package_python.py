"""The Python the deployment package is built for, and the check that it is the app's.

azd runs this twice (azure.yaml):

- `target`, in the prepackage hook, prints the Python the Bicep deploys: PYTHON_VERSION
  from the azd environment, or its default in infra/main.parameters.json (one source);
  `python3 -m devkit.package --python` builds for it. In `azd up` the package is built
  before provisioning, so this is the Python the provisioning is about to set.
- `check`, in the predeploy hook (after provisioning in `azd up`, alone in `azd deploy`),
  compares the Python the package was built for (.work/package/built.json, which
  devkit/package.py writes) with the one the Function App runs (AZURE_FUNCTION_PYTHON_VERSION,
  main.bicep's output), and refuses a mismatch before anything is uploaded: cp312 wheels
  in a 3.11 app fail on every native import.

Usage: python3 infra/hooks/package_python.py target|check
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
PARAMETERS = REPO / "infra" / "main.parameters.json"
RECORD = REPO / ".work" / "package" / "built.json"


def target(environ: dict[str, str]) -> str:
    """PYTHON_VERSION, or main.parameters.json's default for it."""
    if environ.get("PYTHON_VERSION"):
        return environ["PYTHON_VERSION"]
    value = json.loads(PARAMETERS.read_text())["parameters"]["pythonVersion"]["value"]
    default = re.fullmatch(r"\$\{PYTHON_VERSION=([0-9.]+)\}", value)
    if default is None:
        raise SystemExit(f"error: {PARAMETERS} gives pythonVersion no PYTHON_VERSION default")
    return default[1]


def check(environ: dict[str, str], record: Path = RECORD) -> str | None:
    """Why the built package must not be deployed to this app, or None when it may."""
    deployed = environ.get("AZURE_FUNCTION_PYTHON_VERSION")
    if not deployed:
        return (
            "the azd environment has no AZURE_FUNCTION_PYTHON_VERSION (the Function App's "
            "Python, an output of infra/main.bicep): run azd provision, then deploy again"
        )
    if not record.is_file():
        return (
            f"no package has been built ({record} is missing): run azd package, then deploy again"
        )
    built = json.loads(record.read_text())["python"]
    if built != deployed:
        return (
            f"the package was built for Python {built}, and the Function App runs Python "
            f"{deployed}: its native wheels would fail to import there. Run azd provision "
            f"(to move the app to Python {built}), or azd env set PYTHON_VERSION {deployed} "
            "and deploy again"
        )
    return None


def main(argv: list[str]) -> int:
    """`target` prints the Python to build for; `check` exits 1 with the reason on a mismatch."""
    if argv == ["target"]:
        print(target(dict(os.environ)))
        return 0
    if argv == ["check"]:
        problem = check(dict(os.environ))
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return 1
        print(
            f"the package is for the Function App's Python, {os.environ['AZURE_FUNCTION_PYTHON_VERSION']}"
        )
        return 0
    print(__doc__.strip().splitlines()[-1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
