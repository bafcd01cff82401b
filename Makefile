# Two commands for a fresh machine:
#   make run     set up .venv on first use, then train the shipped study and export it
#   make test    set up .venv (with the test tools and Ray) on first use, then lint,
#                type-check (mypy), check the import layers and run every test
#   make check   the same checks with the fast tests only (no processes, Ray or browser)
# `make run ARGS="..."` passes ARGS to cnntui instead of the default; `make tui` opens the UI.
# Both install from requirements/constraints.txt, the exact versions tested (`make lock`
# rewrites it); torch and torchvision are not in it. `make test-latest` checks the newest
# versions pyproject.toml allows, in .venv-latest, and only warns.
# TORCH names the torch build to install; the default is the one this project is tested with.
# With your own CUDA build, e.g. make run TORCH="torch torchvision --index-url <your index>",
# or follow the README's manual install.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1
# `make tui` passes ARGS only when given (`make tui ARGS="--set dataset=synthetic"`).
TUI_ARGS := $(if $(filter command line environment,$(origin ARGS)),$(ARGS))
ARGS ?= --run all --export
LOCK := requirements/constraints.txt

BIN := $(VENV)/bin
# Each stamp records what its install step saw, so an edit of pyproject.toml reinstalls.
STAMP_RUN := $(VENV)/.cnntui-installed
STAMP_TEST := $(VENV)/.cnntui-test-installed

.PHONY: run tui test check test-latest lock clean-venv

HINT := echo "cnntui is in $(VENV): run '. $(VENV)/bin/activate' in a shell to type cnntui there, or type $(VENV)/bin/cnntui"

run: $(STAMP_RUN)
	$(BIN)/cnntui $(ARGS); status=$$?; $(HINT); exit $$status

tui: $(STAMP_RUN)
	$(BIN)/cnntui $(TUI_ARGS)

test: $(STAMP_TEST)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# The fast loop: lint, types, the import layers and the tests that start no process, Ray
# or browser and train nothing for long (under 90 s on 2 cores); `make test` runs them all.
FAST := not (process or ray or browser or slow or benchmark)
check: $(STAMP_TEST)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "$(FAST)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP_RUN): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c $(LOCK) -e .
	touch $@

$(STAMP_TEST): pyproject.toml $(LOCK) $(STAMP_RUN)
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[test,ray]"
	touch $@

# The newest versions pyproject.toml allows, without the lock: do they still install,
# import, type-check and edit experiments.toml? A failure here warns; it never fails CI.
LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q $(TORCH)
	$(LATEST)/bin/python -m pip install -q --upgrade -e ".[test,ray]"
	$(LATEST)/bin/python -m pip list --format=freeze --exclude-editable > $(LATEST)/versions.txt
	$(LATEST)/bin/mypy
	$(LATEST)/bin/python -m pytest -q -p no:cacheprovider tests/test_code_health.py \
	    tests/test_import_hygiene.py tests/tui/test_tui_state.py tests/core/test_config.py

# Rewrites $(LOCK) after a dependency changed in pyproject.toml (UPGRADE=1: newest of all).
lock: | $(BIN)/python
	$(BIN)/python -m pip install -q uv
	UV=$(BIN)/uv requirements/lock.sh

clean-venv:
	rm -rf $(VENV)
