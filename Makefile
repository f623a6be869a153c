# Every target installs what it needs: a fresh clone runs `make demo` or `make test` directly.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

export CDK_DISABLE_VERSION_CHECK := 1
export CDK_DISABLE_CLI_TELEMETRY := 1
# jsii warns on every CDK call that Node 20 is past end-of-life; the CLI and library still work.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
CDK := node_modules/.bin/cdk

.PHONY: all venv binaries cdk-cli lint test demo bench deploy destroy synth clean

all: test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "mu needs Python 3.11 or newer as $(PYTHON)" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,cdk]'
	touch $@

venv: $(STAMP)

binaries:
	$(MAKE) -C binaries check

# The CDK CLI pinned by package-lock.json.
node_modules/.installed-stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

cdk-cli: node_modules/.installed-stamp

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

test: $(STAMP) binaries lint cdk-cli
	$(PY) -m pytest

demo: $(STAMP) binaries
	$(VENV)/bin/mu demo

# Settings: `make synth CDK_ARGS="-c copies=4 -c regions=us-east-1,us-west-2"` (README lists them).
synth: $(STAMP) binaries cdk-cli
	$(CDK) synth --no-notices -q $(CDK_ARGS)

# Deploy to the account of your AWS credentials, in their region or in -c regions=... .
# IAM and security-group changes that widen access wait for your approval.
deploy: $(STAMP) binaries cdk-cli
	$(CDK) deploy --all --no-notices --require-approval broadening $(CDK_ARGS)

destroy: $(STAMP) cdk-cli
	$(CDK) destroy --all --no-notices --force $(CDK_ARGS)

bench: $(STAMP) binaries
	$(PY) benchmarks/coordinator_capacity.py
	$(PY) benchmarks/launch_rate.py
	$(PY) benchmarks/worker_output.py

clean:
	$(MAKE) -C binaries clean
	rm -rf $(VENV) cdk.out node_modules *.egg-info .pytest_cache .mypy_cache .ruff_cache
