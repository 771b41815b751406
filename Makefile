# facedag: `make demo` sets everything up and runs the pipeline on the embedded demo
# sources; `make test` runs the tests; `make bench` writes benchmarks/results.json.
# Each target creates .venv first when it is missing, so a fresh clone needs nothing else.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export PYTHONUNBUFFERED := 1

.PHONY: venv demo run status test lint bench chaos chromium

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

demo: venv
	$(VENV)/bin/facedag demo data/demo
	$(VENV)/bin/facedag run

run: venv
	$(VENV)/bin/facedag run

status: venv
	$(VENV)/bin/facedag status

# ruff, and no credentials in the committed DVC config (they belong in .dvc/config.local)
lint: venv
	$(VENV)/bin/ruff check facedag stages flows tests benchmarks
	$(VENV)/bin/facedag check-secrets .dvc/config

# The report's browser test needs headless Chromium: install Debian's when we can (root, apt),
# otherwise that test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium) >/dev/null 2>&1 || \
		echo "make: chromium is not installed (needs root and apt): the report's browser test will skip"

test: lint chromium
	$(PY) -m pytest -q -p no:cacheprovider

bench: venv
	$(PY) -m benchmarks.run

# SIGKILL every stage at random moments (5 trials each), rerun, check nothing was lost:
# benchmarks/chaos.json. Not in CI (about 15 minutes); tests/stages/test_chaos.py is the CI version.
chaos: venv
	$(PY) -m benchmarks.chaos --trials 5
