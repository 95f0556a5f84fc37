# Task scheduler. `make dev` and `make test` work on a fresh machine: they create .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAGE ?= dev

.PHONY: test test-fast dev dev-aws bench bootstrap deploy package policy reset-local clean

# uv, when it is on the PATH, makes the venv and installs the same requirements several
# times faster; pip is the fallback. Neither compiles every module up front: Python
# compiles what the server imports, once, the first time it imports it.
UV := $(shell command -v uv 2>/dev/null)
EMULATOR_VENV := .venv-emulator
ifeq ($(UV),)
NEW_VENV = $(PYTHON) -m venv $(VENV)
INSTALL = $(BIN)/pip install --quiet --disable-pip-version-check --no-compile
NEW_EMULATOR_VENV = $(PYTHON) -m venv $(EMULATOR_VENV)
EMULATOR_INSTALL = $(EMULATOR_VENV)/bin/pip install --quiet --disable-pip-version-check
else
NEW_VENV = $(UV) venv --quiet --seed --python $(PYTHON) $(VENV)
INSTALL = $(UV) pip install --quiet --python $(BIN)/python
NEW_EMULATOR_VENV = $(UV) venv --quiet --seed --python $(PYTHON) $(EMULATOR_VENV)
EMULATOR_INSTALL = $(UV) pip install --quiet --compile-bytecode --python $(EMULATOR_VENV)/bin/python
endif

$(BIN)/python:
	$(NEW_VENV)

# Each stamp re-installs only when its requirement files change. `make dev` installs
# only what the server needs, then taskctl (pyproject.toml) built offline with the
# setuptools and wheel already there; tests add moto and pytest.
$(VENV)/.local-installed: requirements.txt requirements-local.txt pyproject.toml | $(BIN)/python
	$(INSTALL) -r requirements-local.txt
	$(INSTALL) --no-build-isolation --no-deps -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.local-installed requirements-dev.txt
	$(INSTALL) -r requirements-dev.txt
	touch $@

dev: $(VENV)/.local-installed
	$(BIN)/python -m chalicelib.local

# MiniStack (a local AWS emulator) in its own venv: it pins a botocore of its own. Compiled
# at install: every Lambda process it starts imports botocore from here.
$(EMULATOR_VENV)/.installed: requirements-emulator.txt
	$(NEW_EMULATOR_VENV)
	$(EMULATOR_INSTALL) -r requirements-emulator.txt
	touch $@

# The deployed shape on MiniStack: the packaged template deployed through its
# CloudFormation, tasks fired by its EventBridge Scheduler, execute_task run from the zip.
# (`python -m chalicelib.local --with-moto` is the local server on moto's DynamoDB.)
dev-aws: $(VENV)/.local-installed $(EMULATOR_VENV)/.installed
	$(BIN)/python -m chalicelib.emulator

# Debian's Chromium for the dashboard's browser tests (Playwright drives /usr/bin/chromium;
# its own browser downloads are not used). `make dev` does not install it.
$(VENV)/.browser-installed: | $(BIN)/python
	[ -x /usr/bin/chromium ] || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	touch $@

# Every test, in parallel workers (each test has its own ports, data folder and moto).
# Most of the suite waits (on servers, receivers, the browser), so more workers than
# cores pays: TEST_WORKERS=5 on 2 cores, one of them for the emulator's tests (their
# xdist_group), which mostly wait on its schedules.
TEST_WORKERS ?= 5
test: $(VENV)/.dev-installed $(VENV)/.browser-installed $(EMULATOR_VENV)/.installed
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests

# The loop while editing: no moto (integration), no processes or browser (e2e), and a
# smaller fuzz; `make test` runs all of it.
test-fast: $(VENV)/.dev-installed
	FUZZ_EXAMPLES=200 $(BIN)/python -m pytest -q -n 2 -m "not integration and not e2e" tests

# The bench adds APScheduler and matplotlib, and Debian's wrk as the API's load tool.
$(VENV)/.bench-installed: $(VENV)/.dev-installed requirements-bench.txt
	$(INSTALL) -r requirements-bench.txt
	command -v wrk >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	touch $@

# Every benchmark in one run (~20 min on 2 cores): docs/bench/results.md, its charts, and
# README's Performance section. `BENCH_ARGS=--quick` checks that it runs in ~2 min.
bench: $(VENV)/.bench-installed
	$(BIN)/python bench/report.py $(BENCH_ARGS)

bootstrap: $(VENV)/.dev-installed
	$(BIN)/python -m chalicelib.bootstrap --stage $(STAGE)

policy: $(VENV)/.dev-installed
	$(BIN)/python -m chalicelib.bootstrap --stage $(STAGE) --write-policy

# The CloudFormation (SAM) template with this stack's own table, queue, topic, role and
# alarms merged in (infra/resources.json), checked by cfn-lint; the zip with its modules'
# bytecode compiled in (chalicelib/bytecode.py: Lambda's /var/task is read-only, so
# without it every cold start compiles them again).
# Packaging needs no account, but chalice needs a region: without one configured (env or
# profile) it packages for us-east-1 and says so; the template names no region itself.
package: $(VENV)/.dev-installed
	@REGION=$$($(BIN)/python -c "import boto3; print(boto3.session.Session().region_name or '')"); \
	if [ -z "$$REGION" ]; then \
	  echo "no AWS region configured: packaging with us-east-1 (set AWS_DEFAULT_REGION to choose; the template deploys to any region)"; \
	  export AWS_DEFAULT_REGION=us-east-1; \
	fi; \
	$(BIN)/chalice package --stage $(STAGE) --merge-template infra/resources.json build/$(STAGE)
	$(BIN)/python -m chalicelib.bytecode build/$(STAGE)/deployment.zip
	$(BIN)/cfn-lint build/$(STAGE)/sam.json
	@echo "wrote build/$(STAGE)/sam.json; deploy it with:"
	@echo "  sam deploy --template-file build/$(STAGE)/sam.json --stack-name task-scheduler-$(STAGE) \\"
	@echo "    --capabilities CAPABILITY_IAM --resolve-s3 --parameter-overrides Stage=$(STAGE)"

deploy: bootstrap
	$(BIN)/chalice deploy --stage $(STAGE)
	@URL=$$($(BIN)/chalice url --stage $(STAGE)); \
	echo "API: $$URL"; \
	echo "next: store an API token (once), then try it:"; \
	echo "  aws ssm put-parameter --name /task-scheduler/$(STAGE)/api-tokens --type SecureString --overwrite --value \"\$$TOKEN\""; \
	echo "  curl -H \"Authorization: Bearer \$$TOKEN\" $${URL}tasks"

# Forget every local task, the local token and data (the embedded store's folder).
reset-local:
	rm -rf .chalice/local-data

clean:
	rm -rf $(VENV) $(EMULATOR_VENV) build .pytest_cache
