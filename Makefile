# otbtf for QGIS. `make demo` and `make test` do all their own set-up (Debian 12 or 13, as root).
SHELL := /bin/bash
PY := /usr/bin/python3
# Recursive (=): evaluated when a recipe runs, i.e. after `setup` installed python3.
PYVER = $(shell $(PY) -c 'import sys; print(f"python{sys.version_info.major}.{sys.version_info.minor}")')
DEVDEPS = $(CURDIR)/.devdeps/$(PYVER)
# The plugin's own packages (TensorFlow...): no .pth gives them to every Python of the
# machine, so the commands run here get them on PYTHONPATH, after the test tools.
PACKAGES = $(shell $(PY) -m plugin.installer folders)
# Test tools come from .devdeps; everything else is what QGIS itself imports.
RUN = QT_QPA_PLATFORM=offscreen PYTHONPATH=$(DEVDEPS):$(PACKAGES) $(PY)
# Test processes (pytest-xdist), a test file per process (its module fixtures built once): the
# cores, at most 4 (each process may run TensorFlow on every core). `make test TEST_JOBS=1` runs
# them one after the other.
TEST_JOBS ?= $(shell n=$$(nproc); echo $$(( n < 4 ? n : 4 )))
PYTEST = $(RUN) -m pytest -p no:cacheprovider -n $(TEST_JOBS) --dist loadfile

.PHONY: help setup test check test-engine test-qgis demo bench install package lint lint-only clean

help:
	@echo "make demo     run the workflow on the sample data (does its own set-up)"
	@echo "make test     run all tests (does its own set-up)"
	@echo "make check    lint and the engine tests not marked slow (the fast loop, after make setup)"
	@echo "make setup    install Debian packages, TensorFlow and the test tools (idempotent)"
	@echo "make install  install the plugin into the default QGIS profile, enabled"
	@echo "make package  build dist/otbtf-VERSION.zip for the QGIS plugin repository"
	@echo "make bench    benchmarks (ratios measured side by side)"
	@echo "make lint     ruff (lint, format check), mypy and bandit"

setup:
	@bash scripts/setup.sh

# Lint first, so that pytest's summary is the last thing printed.
test: setup
	$(MAKE) --no-print-directory lint-only test-engine test-qgis

# The fast loop: lint, then the engine tests that are not marked slow. `make test` still runs
# everything.
check:
	$(MAKE) --no-print-directory lint-only
	$(PYTEST) -p no:pytest_qgis -m "not slow" -q tests/engine

# The engine runs without QGIS (as on a cluster worker): pytest-qgis stays off.
test-engine:
	$(PYTEST) -p no:pytest_qgis tests/engine

test-qgis:
	$(PYTEST) tests/qgis

demo: setup
	$(RUN) scripts/demo.py demo-output

bench: setup
	$(RUN) scripts/bench.py

install:
	$(PY) scripts/plugin_files.py install

package:
	$(PY) scripts/plugin_files.py package dist

lint: setup
	$(MAKE) --no-print-directory lint-only

lint-only:
	$(DEVDEPS)/bin/ruff check .
	$(DEVDEPS)/bin/ruff format --check .
	PYTHONPATH=$(DEVDEPS):$(PACKAGES) $(PY) -m mypy
	PYTHONPATH=$(DEVDEPS):$(PACKAGES) $(PY) -m bandit -q -r otbtf_plugin processing_provider plugin __init__.py scripts -s B101

clean:
	rm -rf dist demo-output bench-output .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
