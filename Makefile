# Task scheduler. `make test` and `make dev` work on a fresh machine: they create .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAGE ?= dev
PORT ?= 8000

.PHONY: test dev bootstrap deploy package policy clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install only when the requirement files change.
$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -q tests

bootstrap: $(VENV)/.dev-installed
	$(BIN)/python -m chalicelib.bootstrap --stage $(STAGE)

policy: $(VENV)/.dev-installed
	$(BIN)/python -m chalicelib.bootstrap --stage $(STAGE) --write-policy

package: $(VENV)/.dev-installed
	$(BIN)/chalice package --stage $(STAGE) build/$(STAGE)

deploy: bootstrap
	$(BIN)/chalice deploy --stage $(STAGE)

clean:
	rm -rf $(VENV) build .pytest_cache
