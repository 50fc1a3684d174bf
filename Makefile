# Every target sets itself up: a fresh clone needs only Python 3.11+ and Node.js with npm.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# checkov pins old versions of packaging and friends, so it gets a venv of its own.
INFRA_VENV := .venv-infra
CHECKOV_VERSION := 3.3.30
INFRA_STAMP := $(INFRA_VENV)/.installed-checkov-$(CHECKOV_VERSION)

.PHONY: setup test demo bench soak audit clean

setup: $(STAMP) $(INFRA_STAMP) node_modules/.installed

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(INFRA_STAMP):
	rm -rf $(INFRA_VENV)
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INFRA_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: setup
	$(PY) -m pytest

demo: setup
	$(PY) -m devkit.demo

bench: setup
	$(PY) -m devkit.bench

soak: setup
	$(PY) -m devkit.soak

# Needs PyPI's vulnerability data (pypi.org JSON API); run by the GitHub CI workflow.
audit: setup
	$(PY) -m pip_audit -r requirements.txt --progress-spinner off $(shell sed -n 's/^\([A-Z][A-Za-z0-9-]*\).*/--ignore-vuln \1/p' audit-exceptions.txt)

clean:
	rm -rf $(VENV) $(INFRA_VENV) node_modules .work
