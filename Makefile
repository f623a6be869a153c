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
# The worker functions' CPU: `make deploy ARCH=arm64` builds the tools for AArch64 (Graviton) and
# deploys arm64 functions. The coordinator image is x86-64 either way.
ARCH ?= x86_64
# `make deploy` waits for approval of changes that widen access; a pipeline may set APPROVAL=never.
APPROVAL ?= broadening

.PHONY: all venv binaries binaries-x86_64 binaries-arm64 arm64-if-possible cdk-cli sandbox lint test demo \
	bench bench-pymap deploy destroy synth clean

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

binaries-x86_64: binaries

CROSS_ARM64 := gcc-aarch64-linux-gnu libc6-dev-arm64-cross libpng-dev:arm64 zlib1g-dev:arm64
HAVE_ARM64 := command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 && test -f /usr/lib/aarch64-linux-gnu/libpng16.a
CAN_APT := [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1

# AArch64 tools in binaries/bin-arm64, cross-compiled. As root on Debian or Ubuntu the cross
# compiler and arm64 libpng and zlib are installed here; anyone else is told what to install.
binaries-arm64:
	@$(HAVE_ARM64) || { \
	  if $(CAN_APT); then \
	    echo "installing the AArch64 cross compiler and arm64 libpng and zlib"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    dpkg --add-architecture arm64 && apt-get update -qq && \
	      apt-get install -y -qq --no-install-recommends $(CROSS_ARM64) >/dev/null; \
	  else \
	    echo "binaries for arm64 need a cross compiler and arm64 libraries; as root on Debian or Ubuntu:" \
	      "dpkg --add-architecture arm64 && apt-get update && apt-get install $(CROSS_ARM64)" >&2; \
	    exit 1; \
	  fi; }
	$(MAKE) -C binaries ARCH=arm64 check

# The suite checks the arm64 build wherever it can be made (root with apt, or the toolchain at hand).
arm64-if-possible:
	@if $(HAVE_ARM64) || $(CAN_APT); then $(MAKE) --no-print-directory binaries-arm64; \
	else echo "note: no AArch64 cross compiler here, so the arm64 tests are skipped (make binaries-arm64)"; fi

# The CDK CLI pinned by package-lock.json.
node_modules/.installed-stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

cdk-cli: node_modules/.installed-stamp

# Local workers run in bubblewrap (README: "Local workers are sandboxed"). As root on Debian or
# Ubuntu it is installed here; anyone else is told what to install.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap (local workers run in it)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null 2>&1 || \
	      { apt-get update -qq && apt-get install -y -qq --no-install-recommends bubblewrap; }; \
	  else \
	    echo "mu runs local workers in bubblewrap, which is not installed. Install it as root" \
	      "(Debian/Ubuntu: 'sudo apt-get install bubblewrap'; Fedora: 'sudo dnf install bubblewrap')," \
	      "then run make again." >&2; \
	    exit 1; \
	  fi; }
	@command -v bwrap >/dev/null 2>&1 || { echo "bubblewrap did not install; see the messages above" >&2; exit 1; }

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

test: sandbox $(STAMP) binaries arm64-if-possible lint cdk-cli
	$(PY) -m pytest

demo: sandbox $(STAMP) binaries
	$(VENV)/bin/mu demo

# Settings: `make synth CDK_ARGS="-c copies=4 -c regions=us-east-1,us-west-2"` (README lists them).
synth: $(STAMP) binaries-$(ARCH) cdk-cli
	$(CDK) synth --no-notices -q -c arch=$(ARCH) $(CDK_ARGS)

# Deploy to the account of your AWS credentials, in their region or in -c regions=... .
# IAM and security-group changes that widen access wait for your approval.
deploy: $(STAMP) binaries-$(ARCH) cdk-cli
	$(CDK) deploy --all --no-notices --require-approval $(APPROVAL) -c arch=$(ARCH) $(CDK_ARGS)

destroy: $(STAMP) cdk-cli
	$(CDK) destroy --all --no-notices --force -c arch=$(ARCH) $(CDK_ARGS)

bench: sandbox $(STAMP) binaries
	$(PY) benchmarks/coordinator_capacity.py
	$(PY) benchmarks/launch_rate.py
	$(PY) benchmarks/worker_output.py
	$(PY) benchmarks/local_workers.py
	$(MAKE) --no-print-directory bench-pymap

# Lithops, for benchmarks/pymap.py only: in a virtualenv of its own, never in mu's or the tests'.
LITHOPS_VENV := .venv-lithops
$(LITHOPS_VENV)/.installed-stamp:
	test -x $(LITHOPS_VENV)/bin/python || $(PYTHON) -m venv $(LITHOPS_VENV)
	$(LITHOPS_VENV)/bin/python -m pip install --quiet lithops==3.8.0
	touch $@

bench-pymap: sandbox $(STAMP) $(LITHOPS_VENV)/.installed-stamp
	$(PY) benchmarks/pymap.py --lithops-python $(LITHOPS_VENV)/bin/python

clean:
	$(MAKE) -C binaries clean
	rm -rf $(VENV) $(LITHOPS_VENV) cdk.out node_modules *.egg-info .pytest_cache .mypy_cache .ruff_cache
