# Two commands for a fresh machine:
#   make run     set up .venv on first use, then train the shipped study and export it
#   make test    set up .venv (with the test tools and Ray) on first use, then lint,
#                type-check (mypy) and run every test
# `make run ARGS="..."` passes ARGS to cnntui instead of the default; `make tui` opens the UI.
# TORCH names the torch build to install; the default is the one this project is tested with.
# With your own CUDA build, e.g. make run TORCH="torch torchvision --index-url <your index>",
# or follow the README's manual install.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1
ARGS ?= --run all --export

BIN := $(VENV)/bin
# Each stamp records what its install step saw, so an edit of pyproject.toml reinstalls.
STAMP_RUN := $(VENV)/.cnntui-installed
STAMP_TEST := $(VENV)/.cnntui-test-installed

.PHONY: run tui test lint clean-venv

run: $(STAMP_RUN)
	$(BIN)/cnntui $(ARGS)

tui: $(STAMP_RUN)
	$(BIN)/cnntui

test: $(STAMP_TEST)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e .
	touch $@

$(STAMP_TEST): pyproject.toml $(STAMP_RUN)
	$(BIN)/python -m pip install -q -e ".[test,ray]"
	touch $@

clean-venv:
	rm -rf $(VENV)
