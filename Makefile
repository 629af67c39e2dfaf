# The course's three commands. Each makes .venv on first use and reinstalls
# only when pyproject.toml changed (the stamp file remembers the last install).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
ARGS   ?=
# Jupyter refuses to run as root unless told; containers and CI often are root.
AS_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: lab chat test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks --LabApp.default_url=/lab/tree/00_index.ipynb $(AS_ROOT) $(ARGS)

chat: $(STAMP)
	$(BIN)/python -m chat_lesson serve --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m ruff check chat_lesson tests
	$(BIN)/python -m pytest $(ARGS)
