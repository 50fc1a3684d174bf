# Every target sets itself up: a fresh clone needs only Python 3.11+ and Node.js with npm.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench clean

setup: $(STAMP) node_modules/.installed

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
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

clean:
	rm -rf $(VENV) node_modules .work
