# Two commands do all the set-up: `make benchmark` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup benchmark test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU wheel first, so the torch range in pyproject.toml is already satisfied.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,serve,imagenet,ray]'
	touch $(STAMP)

benchmark: $(STAMP)
	$(BIN)/unseen benchmark

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .unseen-cache runs
