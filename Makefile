# Every target installs what it needs: a fresh clone runs `make demo` or `make test` directly.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

export CDK_DISABLE_VERSION_CHECK := 1
export CDK_DISABLE_CLI_TELEMETRY := 1

.PHONY: all venv binaries lint test demo bench clean

all: test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "mu needs Python 3.11 or newer as $(PYTHON)" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

binaries:
	$(MAKE) -C binaries check

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

test: $(STAMP) binaries lint
	$(PY) -m pytest

demo: $(STAMP) binaries
	$(VENV)/bin/mu demo

bench: $(STAMP) binaries
	$(PY) benchmarks/coordinator_capacity.py
	$(PY) benchmarks/launch_rate.py

clean:
	$(MAKE) -C binaries clean
	rm -rf $(VENV) cdk.out node_modules *.egg-info .pytest_cache .mypy_cache .ruff_cache
