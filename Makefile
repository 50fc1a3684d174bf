# Every target sets itself up: a fresh clone needs only Python 3.11, 3.12 or 3.13 and Node.js with npm.
# Each Python gets its own venv (.venv-3.11, .venv-3.12, .venv-3.13), so the default `make test`,
# `make test PYTHON=python3.12` and `make test PYTHON=python3.13` live side by side.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
# The interpreter itself. A pyenv shim refuses a version pyenv has not selected
# (python3.13 while 3.11 is global); then, for a bare name, take the newest such version
# pyenv has installed.
PYTHON_EXE := $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null || \
	case '$(PYTHON)' in (*/*) ;; (*) command -v pyenv >/dev/null 2>&1 && \
	  ls -d "$$(pyenv root)"/versions/*/bin/$(lastword $(PYTHON)) 2>/dev/null | sort -V | tail -n 1;; esac)
PY_VERSION := $(if $(PYTHON_EXE),$(shell $(PYTHON_EXE) -c 'import sys; print("%d.%d" % sys.version_info[:2])'))
ifeq ($(PY_VERSION),)
ifneq ($(MAKECMDGOALS),clean)
$(error cannot run '$(PYTHON)'; install Python 3.11, 3.12 or 3.13, or pass PYTHON=/path/to/python3.x)
endif
endif
# The Pythons Numerai's hosted runner and Azure Functions both offer: checked before any venv
# is made, rather than failing minutes later on a wheel this Python has none of.
SUPPORTED_PYTHONS := 3.11 3.12 3.13
ifneq ($(PY_VERSION),)
ifeq ($(filter $(PY_VERSION),$(SUPPORTED_PYTHONS)),)
ifneq ($(MAKECMDGOALS),clean)
$(error $(PYTHON_EXE) is Python $(PY_VERSION), and this project needs Python 3.11, 3.12 or 3.13 (what Numerai's runner and Azure Functions offer): install one (python.org, pyenv or your package manager), then pass it, for example `make demo PYTHON=python3.12`)
endif
endif
endif
VENV := .venv-$(PY_VERSION)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# checkov pins old versions of packaging and friends, so it gets a venv of its own.
INFRA_VENV := .venv-infra
CHECKOV_VERSION := 3.3.30
INFRA_STAMP := $(INFRA_VENV)/.installed-checkov-$(CHECKOV_VERSION)

# The report page's browser tests drive Debian's Chromium (Playwright never downloads a browser of its own).
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup lint test unit demo local-stack bench soak audit package screenshot clean

# The four are independent: installed side by side, the app's venv (minutes) hides the others.
setup:
	@$(MAKE) --no-print-directory -j4 $(STAMP) $(INFRA_STAMP) node_modules/.installed $(CHROMIUM)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON_EXE) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(INFRA_STAMP):
	rm -rf $(INFRA_VENV)
	$(PYTHON_EXE) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INFRA_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# A fresh machine may have no package lists yet: update only then.
$(CHROMIUM):
	$(SUDO) apt-get install -y --no-install-recommends chromium || \
	  { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; }

# ruff's lint and format rules (pyproject.toml), before the suite: a style slip fails in seconds.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Three workers on two cores: most tests wait on services, leases and timeouts rather than
# compute, and since the warm worker pool a run no longer spends 3 s importing; measured here,
# 737 tests took 376 s in two workers and 242 s in three. The slowest files start first
# (tests/conftest.py), so none runs alone at the end.
test: lint
	$(PY) -m pytest -n 3 --durations=15

# The unit tests of the run's planning and model step: in-memory fakes, no Azurite, no sandbox,
# no workers; a few seconds, for the loop of changing a step.
UNIT_TESTS = tests/test_planning.py tests/test_steps.py tests/test_model_step.py tests/test_fan_in.py \
             tests/test_fakes.py
unit: $(STAMP)
	$(PY) -m pytest -q $(UNIT_TESTS)

# The demo and the benchmarks need only Python and npm (Azurite): no Chromium, no checkov.
APP_SETUP := $(STAMP) node_modules/.installed

demo: $(APP_SETUP)
	$(PY) -m devkit.demo

# Azurite and the Numerai sandbox with example models, for trying the CLI and `func start`.
local-stack: $(APP_SETUP)
	$(PY) -m devkit.local_stack

bench: $(APP_SETUP)
	$(PY) -m devkit.bench

soak: $(APP_SETUP)
	$(PY) -m devkit.soak

# The README's picture of the report page, taken by its browser test.
screenshot: setup
	REPORT_PAGE_SCREENSHOT=docs/report-page.png $(PY) -m pytest tests/test_report_page.py -k real_browser -q

# The deployment package (.work/package): Linux x86_64 wheels and bytecode for this Python, so
# `make package PYTHON=python3.13` for a 3.13 Function App; PACKAGE_FORMATS=lightgbm,onnx,…
# for a profile. Needs only pip, not the venv; on macOS or ARM, Docker or Podman.
package:
	$(PYTHON_EXE) -m devkit.package

# Needs PyPI's vulnerability data (pypi.org JSON API); run by the GitHub CI workflow.
# requirements.txt's markers are resolved for this venv's Python.
audit: setup
	$(PY) -m pip_audit -r requirements.txt --progress-spinner off $(shell sed -n 's/^\([A-Z][A-Za-z0-9-]*\).*/--ignore-vuln \1/p' audit-exceptions.txt)

# Every Python's venv, and the .venv of older checkouts.
clean:
	rm -rf .venv .venv-3.* $(INFRA_VENV) node_modules .work
