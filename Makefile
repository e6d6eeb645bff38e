# spanstream: the one entry point for developers and CI. `make help` lists targets.
#
# `make install` sets up everything from a clean clone: .venv (Python 3.11),
# the pinned Python deps, the project (editable), the compiled decoder
# (native/, Rust), kinesis-mock (npm) and amazon-kclpy with its
# MultiLangDaemon jars (Maven). Each step leaves a stamp in .cache/stamps and
# reruns only when its inputs change.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .cache/stamps
RUN_DIR := .run
PIP := $(BIN)/python -m pip --disable-pip-version-check
PYTEST := $(BIN)/pytest

ifdef CI
export PIP_PROGRESS_BAR := off
endif

# amazon-kclpy 3.2.0 needs amazon-kinesis-client(-multilang) 3.5.3, which the
# Maven repository reachable here does not serve (3.1.3 is the newest
# multilang it has). 3.1.3 has the same Python code as 3.2.0 and its whole
# pom resolves. Bump both together once 3.5.3 can be fetched.
KCLPY_VERSION := 3.1.3
KCLPY_CACHE := .cache/kclpy
KCLPY_DIR := $(KCLPY_CACHE)/amazon_kclpy-$(KCLPY_VERSION)
KCLPY_STAMP := $(STAMPS)/kclpy-$(KCLPY_VERSION)
MVN_DEPENDENCY_PLUGIN := org.apache.maven.plugins:maven-dependency-plugin:3.8.1
# -C: fail on a checksum mismatch instead of warning.
MVN := mvn -B -q -C

.PHONY: help install native kcl-jars test unit integration lint demo bench \
	localstack-test soak lambda-package lambda-bytecode emulators-up emulators-down clean

help: ## List the targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z_-]+:.*## / { printf "  %-16s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

install: $(STAMPS)/python-deps $(STAMPS)/project $(STAMPS)/native $(STAMPS)/node $(KCLPY_STAMP) ## Set up .venv, the native decoder, node_modules and the KCL jars (idempotent)

$(VENV)/pyvenv.cfg:
	$(PYTHON) -m venv $(VENV)

$(STAMPS)/python-deps: requirements-dev.txt requirements.txt $(VENV)/pyvenv.cfg
	$(PIP) install -r requirements-dev.txt
	@mkdir -p $(@D) && touch $@

$(STAMPS)/project: pyproject.toml $(STAMPS)/python-deps
	$(PIP) install --no-deps -e .
	@mkdir -p $(@D) && touch $@

# The compiled OTLP protobuf decoder (spanstream_native), built by maturin
# (pinned in native/pyproject.toml) with cargo. rustup puts cargo in
# ~/.cargo/bin, which a fresh login shell may not have on PATH yet.
CARGO_HOME ?= $(HOME)/.cargo
CARGO_BIN := $(or $(patsubst %/,%,$(dir $(shell command -v cargo 2>/dev/null))),$(CARGO_HOME)/bin)
NATIVE_SOURCES := native/Cargo.toml native/Cargo.lock native/pyproject.toml \
	$(wildcard native/src/*.rs)

native: $(STAMPS)/native ## Build and install the compiled decoder (needs cargo)

$(STAMPS)/native: $(NATIVE_SOURCES) $(STAMPS)/python-deps
	@test -x $(CARGO_BIN)/cargo || { echo "cargo not found on PATH nor in \
	$(CARGO_BIN): install Rust >= 1.85 (https://rustup.rs)" >&2; exit 1; }
	PATH="$(CARGO_BIN):$$PATH" $(PIP) install --no-deps --force-reinstall ./native
	@mkdir -p $(@D) && touch $@

$(STAMPS)/node: package.json package-lock.json
	npm ci --no-audit --no-fund
	@mkdir -p $(@D) && touch $@

kcl-jars: $(KCLPY_STAMP) ## Install amazon-kclpy with its MultiLangDaemon jars fetched by Maven

# The sdist's own jar downloader cannot fetch here, so Maven fetches the jars
# into the extracted sdist (its setup.py skips jars already present), then the
# sdist is installed from that directory.
$(KCLPY_STAMP): devenv/kcl_pom.py $(STAMPS)/python-deps
	rm -rf $(KCLPY_DIR)
	mkdir -p $(KCLPY_CACHE)
	$(PIP) download --no-binary :all: --no-deps --dest $(KCLPY_CACHE) \
		amazon-kclpy==$(KCLPY_VERSION)
	tar -xzf $(KCLPY_CACHE)/amazon_kclpy-$(KCLPY_VERSION).tar.gz -C $(KCLPY_CACHE)
	$(BIN)/python devenv/kcl_pom.py patch $(KCLPY_DIR)/pom.xml
	cd $(KCLPY_DIR) && $(MVN) $(MVN_DEPENDENCY_PLUGIN):copy-dependencies \
		-DexcludeTransitive=true -DoutputDirectory=$(CURDIR)/$(KCLPY_DIR)/amazon_kclpy/jars
	$(BIN)/python devenv/kcl_pom.py check $(KCLPY_DIR)/pom.xml $(KCLPY_DIR)/amazon_kclpy/jars
	$(PIP) install ./$(KCLPY_DIR)
	$(BIN)/python devenv/kcl_pom.py verify $(KCLPY_DIR)/pom.xml
	@mkdir -p $(@D) && touch $@

test: install ## Run every test: unit and integration (starts its own emulators)
	$(PYTEST) tests

unit: install ## Run the unit tests
	$(PYTEST) tests/unit

integration: install ## Run the integration tests against kinesis-mock + moto on loopback
	$(PYTEST) tests/integration

localstack-test: install ## Run the integration tests against LocalStack on :4566 if it answers, else ours
	SPANSTREAM_TARGET=auto $(PYTEST) tests/integration

lint: install ## ruff check, ruff format --check, mypy on spanstream
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: install ## Run the demo: emulators, traffic, KCL workers, summary (python -m consumers.demo)
	$(BIN)/python -m consumers.demo

bench: install ## Run the benchmarks (python -m bench)
	$(BIN)/python -m bench

SOAK_SECS ?= 1800
SOAK_SPANS_PER_SEC ?= 1000
soak: install ## Soak: SOAK_SECS (30 min) at SOAK_SPANS_PER_SEC, memory and lag flat? (bench/soak-results.json)
	$(BIN)/python -m bench.soak --secs $(SOAK_SECS) --spans-per-sec $(SOAK_SPANS_PER_SEC)

# Coverage-guided fuzzing of the decoders (fuzz/decoders.py), for long runs;
# CI runs the hypothesis version in tests/unit. Seeds are rebuilt each run,
# the grown corpus is kept, and a crash, a hang over FUZZ_TIMEOUT_SECS or RSS
# over FUZZ_RSS_MB stops the run with the input in .cache/fuzz/artifacts/.
FUZZ_SECS ?= 600
FUZZ_RSS_MB ?= 2048
FUZZ_TIMEOUT_SECS ?= 10
FUZZ_DIR := .cache/fuzz
.PHONY: fuzz
fuzz: $(STAMPS)/fuzz-deps $(STAMPS)/project $(STAMPS)/native ## Fuzz the decoders with atheris for FUZZ_SECS (600) s
	rm -rf $(FUZZ_DIR)/seeds
	mkdir -p $(FUZZ_DIR)/corpus $(FUZZ_DIR)/artifacts
	$(BIN)/python -m fuzz.decoders --write-corpus $(FUZZ_DIR)/seeds
	$(BIN)/python -m fuzz.decoders $(FUZZ_DIR)/corpus $(FUZZ_DIR)/seeds \
		-max_total_time=$(FUZZ_SECS) -rss_limit_mb=$(FUZZ_RSS_MB) \
		-timeout=$(FUZZ_TIMEOUT_SECS) -artifact_prefix=$(FUZZ_DIR)/artifacts/ \
		-print_final_stats=1

$(STAMPS)/fuzz-deps: requirements-fuzz.txt $(STAMPS)/python-deps
	$(PIP) install -r requirements-fuzz.txt
	@mkdir -p $(@D) && touch $@

# The code deploy/template.yaml deploys (its CodeUri): the runtime
# dependencies as Linux x86_64 wheels for the function's Python, and the
# spanstream and consumers packages. The compiled decoder is not included:
# the function decodes with the Python decoder (SPANSTREAM_DECODER=auto).
# Lambda's code directory is read-only, so bytecode must ship in the package
# or every cold start compiles every module: LAMBDA_PYTHON (the runtime's
# Python version, found on PATH) compiles it, with unchecked hashes because
# the zip does not keep the sources' modification times exactly.
LAMBDA_BUILD := build/lambda
LAMBDA_PYTHON_VERSION := 3.13
LAMBDA_PYTHON ?= $(shell for python in python$(LAMBDA_PYTHON_VERSION) \
	$${PYENV_ROOT:-$$HOME/.pyenv}/versions/$(LAMBDA_PYTHON_VERSION)*/bin/python3; \
	do $$python -c '' 2>/dev/null && { command -v $$python; break; }; done)

lambda-package: $(STAMPS)/python-deps ## Build build/lambda, the code of deploy/template.yaml (then: sam deploy)
	rm -rf $(LAMBDA_BUILD)
	$(PIP) install --quiet --target $(LAMBDA_BUILD) --implementation cp \
		--python-version $(LAMBDA_PYTHON_VERSION) --only-binary :all: \
		--platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
		-r requirements.txt
	cp -r spanstream consumers $(LAMBDA_BUILD)/
	$(MAKE) --no-print-directory lambda-bytecode LAMBDA_BUILD=$(LAMBDA_BUILD)

lambda-python: # The interpreter lambda-bytecode compiles with (for its test)
	@echo "$(LAMBDA_PYTHON)"

lambda-bytecode: ## Compile LAMBDA_BUILD's modules for the function's Python (part of lambda-package)
	find $(LAMBDA_BUILD) -name __pycache__ -type d -prune -exec rm -rf {} +
	@test -n "$(LAMBDA_PYTHON)" || { echo "python$(LAMBDA_PYTHON_VERSION) not \
	found (PATH, pyenv): it compiles the package's bytecode for the function's \
	runtime; set LAMBDA_PYTHON=/path/to/python$(LAMBDA_PYTHON_VERSION)" >&2; exit 1; }
	$(LAMBDA_PYTHON) -m compileall -q -j 0 --invalidation-mode unchecked-hash \
		$(LAMBDA_BUILD)

emulators-up: install ## Start the emulators in the background; endpoints in .run/endpoints.env
	$(BIN)/python -m devenv up --run-dir $(RUN_DIR)

emulators-down: ## Stop what emulators-up started
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m devenv down --run-dir $(RUN_DIR); \
	else echo "no .venv: nothing to stop"; fi

clean: emulators-down ## Remove everything install and the tests made (.venv, .cache, node_modules, .run)
	rm -rf $(VENV) .cache node_modules $(RUN_DIR) .pytest_cache .mypy_cache \
		.ruff_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
